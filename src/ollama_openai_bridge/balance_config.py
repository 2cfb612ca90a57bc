"""Replicas of one upstream in ``UPSTREAMS_FILE``: ``base_urls``, ``balance`` and
``outlier_detection``, as plain frozen data validated at start (docs/CONFIGURATION.md,
"Replicas and load balancing").

An upstream with one ``base_url`` (the default, and every upstream before this) has no
:class:`BalanceSpec`: nothing about balancing exists for it at run time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# The strategies, by the names Envoy gives the same ideas: LEAST_REQUEST, ROUND_ROBIN with
# weights, and a consistent hash (RING_HASH/MAGLEV; here rendezvous hashing) of the request.
LEAST_OUTSTANDING = "least_outstanding"
WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
AFFINITY = "affinity"
STRATEGIES = (LEAST_OUTSTANDING, WEIGHTED_ROUND_ROBIN, AFFINITY)
MAX_WEIGHT = 1000
BALANCE_KEYS = frozenset({"base_urls", "balance", "outlier_detection"})
_REPLICA_KEYS = frozenset({"url", "weight", "name"})
_OUTLIER_KEYS = frozenset(
    {"consecutive_failures", "base_ejection_time", "max_ejection_time", "max_ejection_percent"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")  # a metric label value; ':' for host:port


class BalanceError(ValueError):
    """An invalid replica setting; the message names the key (the caller adds the entry)."""


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """One base URL of an upstream: ``url`` without a trailing slash; ``weight`` its share
    (1..1000) for weighted round robin, least outstanding and affinity; ``name`` its label in
    ``/ready``, metrics and logs (default: ``host:port`` of the URL, never its credentials)."""

    url: str
    weight: int = 1
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutlierSpec:
    """Envoy's consecutive-failure outlier detection: ``consecutive_failures`` failures in a row
    (0: never eject) eject a replica for ``base_ejection_time`` seconds times the number of its
    ejections, at most ``max_ejection_time``; at most ``max_ejection_percent`` % of the replicas
    are ejected at once (always at least one may be, as Envoy does)."""

    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 50


@dataclass(frozen=True, slots=True)
class BalanceSpec:
    """The replicas of one upstream (two or more) and how a call chooses one."""

    replicas: tuple[ReplicaSpec, ...]
    strategy: str = LEAST_OUTSTANDING
    outlier: OutlierSpec = field(default_factory=OutlierSpec)


def http_url(value: Any, key: str) -> str:
    """``value`` as an http(s) URL without a trailing slash; BalanceError naming ``key``."""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise BalanceError(f"'{key}' must be an http(s) URL, got {value!r}")
    return str(value).rstrip("/")


def check_single(entry: Mapping[str, Any]) -> None:
    """An upstream with one ``base_url``: ``balance`` and ``outlier_detection`` need replicas."""
    for key in ("balance", "outlier_detection"):
        if key in entry:
            raise BalanceError(f"{key!r} needs 'base_urls' with two or more replicas")


def parse(entry: Mapping[str, Any]) -> tuple[str, BalanceSpec | None]:
    """An upstream entry with ``base_urls``: its first URL (the upstream's ``base_url``: profile
    detection, the tool-call store's key) and its :class:`BalanceSpec`, or None for a list of
    one URL (a plain upstream). Raises :class:`BalanceError`."""
    if "base_url" in entry:
        raise BalanceError("give 'base_url' or 'base_urls', not both")
    raw = entry["base_urls"]
    if not isinstance(raw, list) or not raw:
        raise BalanceError("'base_urls' must be a non-empty list of URLs or {url, weight, name}")
    replicas = tuple(_replica(i, item) for i, item in enumerate(raw))
    for what, values in (
        ("URL", [r.url for r in replicas]),
        ("name", [r.name for r in replicas]),
    ):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                hint = " (give each a 'name')" if what == "name" else ""
                raise BalanceError(f"'base_urls': {what} {value!r} is used twice{hint}")
            seen.add(value)
    if len(replicas) == 1:
        check_single(entry)
        return replicas[0].url, None
    strategy = entry.get("balance", LEAST_OUTSTANDING)
    if strategy not in STRATEGIES:
        raise BalanceError(f"unknown 'balance' {strategy!r}; expected one of {list(STRATEGIES)}")
    outlier = _outlier(entry.get("outlier_detection") or {})
    return replicas[0].url, BalanceSpec(replicas, strategy, outlier)


def _replica(i: int, item: Any) -> ReplicaSpec:
    where = f"base_urls[{i}]"
    if isinstance(item, str):
        item = {"url": item}
    if not isinstance(item, dict):
        raise BalanceError(f"{where}: must be a URL or a mapping with 'url'")
    unknown = set(item) - _REPLICA_KEYS
    if unknown:
        raise BalanceError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_REPLICA_KEYS)}"
        )
    url = http_url(item.get("url"), f"{where}.url")
    if urlsplit(url).username is not None or urlsplit(url).password is not None:
        # One client serves all replicas of an upstream, chosen by the first URL; Basic auth
        # from a URL is aiohttp's alone (http1.unsupported). A header serves every replica.
        raise BalanceError(
            f"{where}: credentials in a replica's URL (user:password@) are not supported; "
            "send them with the upstream's headers ({Authorization: Basic ...}) or api_key"
        )
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise BalanceError(f"{where}: 'weight' must be an integer from 1 to {MAX_WEIGHT}")
    parts = urlsplit(url)
    default = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    name = item.get("name", default)
    if not isinstance(name, str) or not _NAME.match(name):
        raise BalanceError(f"{where}: 'name' must be letters, digits, '_', '.', ':' or '-'")
    return ReplicaSpec(url, weight, name)


def _outlier(raw: Any) -> OutlierSpec:
    if not isinstance(raw, dict):
        raise BalanceError("'outlier_detection' must be a mapping")
    unknown = set(raw) - _OUTLIER_KEYS
    if unknown:
        raise BalanceError(
            f"'outlier_detection': unknown key(s) {sorted(unknown)}; "
            f"expected {sorted(_OUTLIER_KEYS)}"
        )
    spec = OutlierSpec()
    failures = raw.get("consecutive_failures", spec.consecutive_failures)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise BalanceError("'outlier_detection.consecutive_failures' must be an integer >= 0")
    times = []
    for key in ("base_ejection_time", "max_ejection_time"):
        value = raw.get(key, getattr(spec, key))
        # .nan and .inf are YAML floats: NaN failed every second request, inf never let an
        # ejected replica back (issue #20's review, M3).
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise BalanceError(f"'outlier_detection.{key}' must be a positive number of seconds")
        times.append(float(value))
    if times[1] < times[0]:
        raise BalanceError(
            "'outlier_detection.max_ejection_time' must be at least base_ejection_time"
        )
    percent = raw.get("max_ejection_percent", spec.max_ejection_percent)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise BalanceError("'outlier_detection.max_ejection_percent' must be from 0 to 100")
    return OutlierSpec(failures, times[0], times[1], percent)
