"""Who may spend how many tokens (issue #20): TOKEN_BUDGET and TOKEN_BUDGETS_FILE, read at start.

Pure rules, no I/O but reading the file: :func:`parse_budget` reads a budget
(``"20k/minute; 1M/day"``), :func:`window` names the fixed UTC window a moment falls in, and
:func:`load_accounts` makes one :class:`Account` per inbound key. :mod:`budgets` counts and
enforces them.

A key is never stored nor shown: it is known by its *key id*, the first 8 hex digits of its
SHA-256 (``printf %s "$KEY" | sha256sum | cut -c1-8``), or by a name the budgets file gives it.
Counters are kept under the guard's caller hash (16 hex digits, ``AccessRecord.caller``), so
two keys whose ids collide still count apart -- and the start refuses such a pair, so that the
usage endpoint and the metrics stay unambiguous.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Window lengths in seconds; the month is the calendar month (UTC), 0 here.
UNITS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400, "month": 0}
QUOTA_UNITS = frozenset({"day", "month"})  # a refusal that lasts: a quota, not a rate

_ITEM = re.compile(
    r"^(\d+(?:\.\d+)?)\s*([km]?)\s*(?:/|\s+per\s+)\s*(minute|hour|day|month)s?$", re.IGNORECASE
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_ID = re.compile(r"^[0-9a-f]{8,64}$")
_SCALE = {"": 1, "k": 1000, "m": 1_000_000}


class BudgetError(ValueError):
    """An invalid budget or budgets file; the message is meant for the operator, as is."""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``tokens`` (prompt + completion) per fixed ``unit`` window."""

    unit: str
    tokens: int

    def __str__(self) -> str:
        return f"{self.tokens}/{self.unit}"


@dataclass(frozen=True, slots=True)
class Account:
    """One inbound key's budget: ``key_id`` (8 hex digits of its SHA-256), an optional ``name``
    from the budgets file, its ``limits`` (empty: counted, never refused) and ``counter``, the
    16-hex-digit hash its counters are kept under (the guard's caller, without ``key:``)."""

    key_id: str
    name: str | None
    limits: tuple[Limit, ...]
    counter: str

    @property
    def label(self) -> str:
        """How logs, errors and metrics name the key: its name, else its key id."""
        return self.name or self.key_id


Window = tuple[str, int, float]  # unit, window number, when it ends (epoch seconds)


@dataclass(slots=True)
class Ticket:
    """One admitted request's account with its key's budget (budgets.TokenBudgets.admit):
    ``estimate`` prompt tokens charged when it was admitted -- ``reserved`` of them in the
    counters (0 when Redis could not take them, or the key has no limit) -- in the windows
    current then (``windows``). :meth:`answered` records what the answer reported; settled once
    (budgets.TokenBudgets.settle) when the response is over."""

    account: Account
    windows: tuple[Window, ...]
    estimate: int
    reserved: int
    answered_at_all: bool = False  # an answer came (whole, or a stream however it ended)
    prompt: int | None = None  # as the backend reported them (None: not reported)
    completion: int | None = None
    chars: int = 0  # characters of text, reasoning and tool calls the answer produced

    def answered(self, prompt: int | None, completion: int | None, chars: int) -> None:
        """The answer came: its reported counts (None: not reported) and ``chars``, what it
        produced (for the completion estimate when ``completion`` is None)."""
        self.answered_at_all = True
        self.prompt, self.completion, self.chars = prompt, completion, chars


def parse_budget(text: str) -> tuple[Limit, ...]:
    """``"20000/minute; 1.5M/day, 100k per month"`` -> one :class:`Limit` per unit, in the order
    of :data:`UNITS`. Units: minute, hour, day, month; ``k`` and ``M`` multiply by a thousand
    and a million. Empty -> no limit. Raises :class:`BudgetError`."""
    limits: dict[str, Limit] = {}
    for raw in re.split(r"[;,]", text):
        item = raw.strip()
        if not item:
            continue
        m = _ITEM.match(item)
        if m is None:
            raise BudgetError(
                f"{item!r} is not a budget: use TOKENS/UNIT with a unit of minute, hour, day or "
                "month, e.g. '20000/minute;1M/day'"
            )
        number, scale, unit = m.groups()
        tokens = int(float(number) * _SCALE[scale.lower()])
        unit = unit.lower()
        if tokens < 1:
            raise BudgetError(f"{item!r}: a budget is at least 1 token")
        if unit in limits:
            raise BudgetError(f"{item!r}: a second budget per {unit}")
        limits[unit] = Limit(unit, tokens)
    return tuple(limits[u] for u in UNITS if u in limits)


def window(unit: str, now: float) -> tuple[int, float]:
    """The fixed UTC window of ``unit`` that holds ``now`` (epoch seconds): its number (the
    same on every replica) and when it ends (epoch seconds). Minutes, hours and days start at
    :00 and midnight UTC; months on the 1st, 00:00 UTC."""
    n, _, end = bounds(unit, now)
    return n, end


def bounds(unit: str, now: float) -> tuple[int, float, float]:
    """:func:`window`'s number, and when the window starts and ends (epoch seconds)."""
    seconds = UNITS[unit]
    if seconds:
        n = int(now // seconds)
        return n, float(n * seconds), float((n + 1) * seconds)
    moment = datetime.fromtimestamp(now, UTC)
    n = moment.year * 12 + moment.month - 1
    year, month = divmod(n + 1, 12)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()
    return n, start, datetime(year, month + 1, 1, tzinfo=UTC).timestamp()


def key_id(key: str) -> str:
    """The key id shown for ``key``: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def caller_of(key: str) -> str:
    """The caller the guard records for ``key`` (security.GuardMiddleware, the same hash)."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def load_accounts(
    default: str, path: Path | None, keys: list[str], admin: str = ""
) -> dict[str, Account] | None:
    """Every inbound key's :class:`Account`, by caller (``key:`` + 16 hex digits), or None when
    budgets are off (no TOKEN_BUDGET and no TOKEN_BUDGETS_FILE). ``default``: TOKEN_BUDGET, the
    budget of a key the file does not name; ``admin``: USAGE_ADMIN_KEY. Raises
    :class:`BudgetError` for budgets without inbound keys, an admin key without budgets or equal
    to an inbound key, two keys with one key id, and any fault of the file."""
    if not default and path is None:
        if admin:
            raise BudgetError(
                "USAGE_ADMIN_KEY reads the token budgets' usage: set TOKEN_BUDGET or "
                "TOKEN_BUDGETS_FILE too"
            )
        return None
    if not keys:
        raise BudgetError(
            "TOKEN_BUDGET and TOKEN_BUDGETS_FILE count tokens per inbound key: set "
            "PROXY_API_KEYS or PROXY_API_KEYS_FILE"
        )
    if admin and admin in keys:
        raise BudgetError(
            "USAGE_ADMIN_KEY must not be one of the inbound keys (it reads every key's usage "
            "and spends no tokens)"
        )
    limits = parse_budget(default)
    digests = {hashlib.sha256(k.encode()).hexdigest(): k for k in keys}
    ids: dict[str, str] = {}
    for digest in digests:
        other = ids.setdefault(digest[:8], digest)
        if other != digest:
            raise BudgetError(
                f"two inbound keys have the key id {digest[:8]} (the first 8 hex digits of their "
                "SHA-256): replace one of them"
            )
    named = _read_file(path, list(digests), limits) if path is not None else {}
    accounts: dict[str, Account] = {}
    for digest in digests:
        name, own = named.get(digest, (None, limits))
        accounts["key:" + digest[:16]] = Account(digest[:8], name, own, digest[:16])
    return accounts


def _read_file(
    path: Path, digests: list[str], default: tuple[Limit, ...]
) -> dict[str, tuple[str | None, tuple[Limit, ...]]]:
    """TOKEN_BUDGETS_FILE: digest -> (name, limits) for each key it names (``default``: an
    entry's limits when it gives no ``budget``)."""
    import yaml  # noqa: PLC0415 -- only with TOKEN_BUDGETS_FILE

    where = f"TOKEN_BUDGETS_FILE {path}"
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML too
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BudgetError(f"{where}: cannot read it: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BudgetError(f"{where}: must be a mapping of key id -> budget or {{name, budget}}")
    out: dict[str, tuple[str | None, tuple[Limit, ...]]] = {}
    names: dict[str, str] = {}
    for entry, value in raw.items():
        at = f"{where}: entry {str(entry)!r}"
        if not isinstance(entry, str):  # YAML reads 12345678 as a number, 01234567 as octal
            raise BudgetError(f"{at}: write the key id as a string, in quotes")
        ident = entry.lower()
        if not _KEY_ID.match(ident):
            raise BudgetError(f"{at}: not a key id (8 to 64 hex digits of the key's SHA-256)")
        matches = [d for d in digests if d.startswith(ident)]
        if len(matches) != 1:
            raise BudgetError(f"{at}: matches no inbound key (PROXY_API_KEYS, PROXY_API_KEYS_FILE)")
        digest = matches[0]
        if digest in out:
            raise BudgetError(f"{at}: a second entry for the key {digest[:8]}")
        out[digest] = _entry(at, value, names, digest, default)
    short_ids = {d[:8] for d in digests}
    for name in names:
        if name.lower() in short_ids:
            raise BudgetError(f"{where}: the name {name!r} is another key's id")
    return out


def _entry(
    at: str, value: Any, names: dict[str, str], digest: str, default: tuple[Limit, ...]
) -> tuple[str | None, tuple[Limit, ...]]:
    """One entry's (name, limits): a budget alone, or ``{name, budget}`` -- without ``budget``
    the default (TOKEN_BUDGET); with an empty or null one, no limit (counted all the same)."""
    if isinstance(value, str):
        return None, _budget(at, value)
    if not isinstance(value, dict) or not set(value) <= {"name", "budget"}:
        raise BudgetError(f"{at}: must be a budget ('20k/minute;1M/day') or {{name, budget}}")
    name = value.get("name")
    if name is not None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise BudgetError(
                f"{at}: 'name' must be 1 to 64 letters, digits, '.', '_' or '-' (it is a metric "
                "label)"
            )
        if name in names:
            raise BudgetError(f"{at}: the name {name!r} is taken by the key {names[name][:8]}")
        names[name] = digest
    if "budget" not in value:
        return name, default
    budget = value["budget"]
    if budget is None:
        budget = ""
    if not isinstance(budget, str):
        raise BudgetError(f"{at}: 'budget' must be text such as '20k/minute;1M/day'")
    return name, _budget(at, budget)


def _budget(at: str, text: str) -> tuple[Limit, ...]:
    try:
        return parse_budget(text)
    except BudgetError as exc:
        raise BudgetError(f"{at}: {exc}") from None
