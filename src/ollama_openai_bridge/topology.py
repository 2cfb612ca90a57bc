"""Which backends the proxy fronts: ``UPSTREAMS_FILE`` (YAML or JSON), or the single default.

Plain frozen data, validated once at start. Every problem stops start-up with one message that
names the file, the entry and what is wrong with it, like the rest of the configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_openai_bridge import balance_config
from ollama_openai_bridge.balance_config import BalanceError, BalanceSpec
from ollama_openai_bridge.profiles import PROFILES

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no ':' -- "name:model" addresses an upstream
_UPSTREAM_KEYS = frozenset(
    {
        "name",
        "base_url",
        "api_key",
        "api_key_env",
        "models",
        "timeout",
        "extra_params",
        "profile",
        "extra_body",
        "headers",
        "max_output_tokens",
        *balance_config.BALANCE_KEYS,
    }
)
# Header names whose values are credentials: kept out of logs and error bodies like the key.
SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|signature|credential", re.I)
_TOP_KEYS = frozenset({"upstreams", "aliases", "fallbacks"})


class TopologyError(ValueError):
    """An invalid UPSTREAMS_FILE; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    name: str
    base_url: str  # without a trailing slash
    api_key: str = field(default="", repr=False)
    models: tuple[str, ...] | None = None  # globs over the ids the upstream lists; None = all
    timeout: float | None = None  # REQUEST_TIMEOUT for this upstream
    extra_params: tuple[str, ...] = ()  # Ollama options this backend accepts under their name
    profile: str = "auto"  # a name in profiles.PROFILES, or auto: detected from base_url
    extra_body: Mapping[str, Any] = field(default_factory=dict)  # added to every request body
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # sent with every call
    max_output_tokens: int | None = None  # MAX_OUTPUT_TOKENS for this upstream
    # Two or more replicas (base_urls) and how to balance them; None: base_url alone.
    balance: BalanceSpec | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    upstreams: tuple[UpstreamSpec, ...]
    aliases: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # name -> (up, model)
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # model -> upstreams
    from_file: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.upstreams)


def single(
    base_url: str,
    api_key: str,
    profile: str = "auto",
    extra_body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Topology:
    """The default: OPENAI_API_BASE_URL and OPENAI_API_KEY (BACKEND_PROFILE,
    BACKEND_EXTRA_BODY, BACKEND_HEADERS), one upstream named ``default``."""
    spec = UpstreamSpec(
        "default",
        base_url.rstrip("/"),
        api_key,
        profile=profile,
        extra_body=dict(extra_body or {}),
        headers=dict(headers or {}),
    )
    return Topology((spec,))


def load(path: Path, env: Mapping[str, str]) -> Topology:
    import yaml  # noqa: PLC0415 -- only with UPSTREAMS_FILE

    where = f"UPSTREAMS_FILE {path}"
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML too
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TopologyError(f"{where}: cannot read it: {exc}") from None
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: must be a mapping with an 'upstreams' list")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise TopologyError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_TOP_KEYS)}"
        )
    entries = raw.get("upstreams")
    if not isinstance(entries, list) or not entries:
        raise TopologyError(f"{where}: 'upstreams' must be a non-empty list")
    upstreams: list[UpstreamSpec] = []
    for i, entry in enumerate(entries):
        spec = _upstream(f"{where}: upstreams[{i}]", entry, env)
        if spec.name in {u.name for u in upstreams}:
            raise TopologyError(f"{where}: upstreams[{i}]: name {spec.name!r} is used twice")
        upstreams.append(spec)
    names = {u.name for u in upstreams}
    aliases = _aliases(where, raw.get("aliases") or {}, names)
    fallbacks = _fallbacks(where, raw.get("fallbacks") or {}, names)
    return Topology(tuple(upstreams), aliases, fallbacks, from_file=True)


def _upstream(where: str, entry: Any, env: Mapping[str, str]) -> UpstreamSpec:
    if not isinstance(entry, dict):
        raise TopologyError(f"{where}: must be a mapping with 'name' and 'base_url'")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise TopologyError(
            f"{where}: 'name' must be letters, digits, '_', '.' or '-' (no ':'), got {name!r}"
        )
    where = f"{where} ({name})"
    unknown = set(entry) - _UPSTREAM_KEYS
    if unknown:
        raise TopologyError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_UPSTREAM_KEYS)}"
        )
    balance: BalanceSpec | None = None
    try:
        if "base_urls" in entry:  # replicas (balance_config.py)
            base_url, balance = balance_config.parse(entry)
        else:
            base_url = balance_config.http_url(entry.get("base_url"), "base_url")
            balance_config.check_single(entry)
    except BalanceError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    if "api_key" in entry and "api_key_env" in entry:
        raise TopologyError(f"{where}: give 'api_key' or 'api_key_env', not both")
    api_key = entry.get("api_key", "")
    if "api_key_env" in entry:
        var = entry["api_key_env"]
        if not isinstance(var, str) or not var:
            raise TopologyError(f"{where}: 'api_key_env' must name an environment variable")
        if var not in env:
            raise TopologyError(f"{where}: environment variable {var} (api_key_env) is not set")
        api_key = env[var]
    if not isinstance(api_key, str):
        raise TopologyError(f"{where}: 'api_key' must be a string")
    models = entry.get("models")
    if models is not None and (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
    ):
        raise TopologyError(f"{where}: 'models' must be a non-empty list of globs")
    timeout = entry.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise TopologyError(f"{where}: 'timeout' must be a positive number of seconds")
    max_output = entry.get("max_output_tokens")
    if max_output is not None and (
        isinstance(max_output, bool) or not isinstance(max_output, int) or max_output <= 0
    ):
        raise TopologyError(f"{where}: 'max_output_tokens' must be a positive integer")
    extra = entry.get("extra_params") or []
    if not isinstance(extra, list) or not all(isinstance(p, str) and p for p in extra):
        raise TopologyError(f"{where}: 'extra_params' must be a list of Ollama option names")
    profile = entry.get("profile", "auto")
    profile = profile.strip().lower() if isinstance(profile, str) else profile
    if profile != "auto" and profile not in PROFILES:
        raise TopologyError(
            f"{where}: unknown 'profile' {profile!r}; expected auto or one of {sorted(PROFILES)}"
        )
    try:
        extra_body = check_extra_body(entry.get("extra_body") or {})
        headers = check_headers(entry.get("headers") or {})
    except ValueError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    return UpstreamSpec(
        name,
        base_url.rstrip("/"),
        api_key,
        tuple(models) if models is not None else None,
        float(timeout) if timeout is not None else None,
        tuple(extra),
        profile,
        extra_body,
        headers,
        max_output,
        balance,
    )


# Fields the proxy itself must set: an operator's extra_body may not replace them.
_RESERVED_BODY = frozenset({"model", "messages", "prompt", "input", "stream"})


def check_extra_body(value: Any) -> dict[str, Any]:
    """``extra_body``: a JSON object of fields added to every request body. ValueError (naming
    the problem) for anything else, or for a field the proxy sets itself."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise ValueError("'extra_body' must be an object of request fields")
    reserved = sorted(_RESERVED_BODY & set(value))
    if reserved:
        raise ValueError(f"'extra_body' may not set {reserved}: the proxy sets them per request")
    return dict(value)


def check_headers(value: Any) -> dict[str, str]:
    """``headers``: header name -> value, both printable ASCII strings (HTTP/1.1 field syntax,
    RFC 9110 §5); ValueError otherwise."""
    if not isinstance(value, dict):
        raise ValueError("'headers' must map header names to values")  # noqa: TRY004 -- pydantic
    for name, val in value.items():
        if not (isinstance(name, str) and _TOKEN.match(name)):
            raise ValueError(f"'headers': {name!r} is not a header name")
        if not (isinstance(val, str) and val.isascii() and val.isprintable()):
            raise ValueError(f"'headers': the value of {name} must be printable ASCII text")
        if name.lower() in ("host", "content-length", "content-type", "transfer-encoding"):
            raise ValueError(f"'headers': {name} is set by the proxy")
    return dict(value)


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token


def _aliases(where: str, raw: Any, names: set[str]) -> dict[str, tuple[str, str]]:
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: 'aliases' must map a name to 'upstream:model'")
    out: dict[str, tuple[str, str]] = {}
    for alias, target in raw.items():
        upstream, sep, model = target.partition(":") if isinstance(target, str) else ("", "", "")
        if not isinstance(alias, str) or not alias or not sep or not model:
            raise TopologyError(
                f"{where}: aliases[{alias!r}]: must be 'upstream:model', got {target!r}"
            )
        if upstream not in names:
            raise TopologyError(
                f"{where}: aliases[{alias!r}]: unknown upstream {upstream!r} "
                f"(upstreams: {sorted(names)})"
            )
        out[alias] = (upstream, model)
    return out


def _fallbacks(where: str, raw: Any, names: set[str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: 'fallbacks' must map a model to a list of upstreams")
    out: dict[str, tuple[str, ...]] = {}
    for model, chain in raw.items():
        if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
            raise TopologyError(
                f"{where}: fallbacks[{model!r}]: must be a non-empty list of upstream names"
            )
        unknown = [c for c in chain if c not in names]
        if unknown:
            raise TopologyError(
                f"{where}: fallbacks[{model!r}]: unknown upstream(s) {unknown} "
                f"(upstreams: {sorted(names)})"
            )
        out[str(model)] = tuple(dict.fromkeys(chain))
    return out
