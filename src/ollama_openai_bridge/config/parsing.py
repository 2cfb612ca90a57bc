"""How an environment variable's text becomes a value, and the error an operator reads.

Shared by the settings' concerns (the other modules of this package): byte sizes with units,
comma-separated lists, JSON objects, files that must exist. Each raises ``ValueError`` inside a
pydantic validator, which names the variable; :class:`ConfigError` is what leaves the package.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BeforeValidator

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


class ConfigError(Exception):
    """Invalid configuration; the message is meant for the operator, as is."""


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"64MB"``, ``"64MiB"``, ``"1g"`` (KB/MB/GB are powers of 1000,
    KiB/MiB/GiB of 1024; case is ignored). Raises ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(
            f"not a size: {value!r} (use bytes, or a number with KB/MB/GB/KiB/MiB/GiB)"
        )
    number, unit = float(m.group(1)), (m.group(2) or "b").lower()
    return int(number * (1024 if "i" in unit else 1000) ** "bkmg".index(unit[0]))


def split_list(value: Any) -> Any:
    """A comma-separated variable's items, stripped, empty ones dropped (``"a, ,b"`` -> ``["a",
    "b"]``); a value that is not text (a list given in code) passes as it is."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def json_object(value: Any) -> Any:
    """An environment variable's JSON object text, decoded; blank text is ``{}``, and objects
    given in code pass as they are. Raises ValueError for text that is not JSON (the caller
    checks that it is an object)."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None
    return value


def existing_file(path: Path | None) -> Path | None:
    """``path`` as it is when unset or a regular file; raises ValueError otherwise, so that a
    mistyped path stops the start instead of the first request that reads it."""
    if path is not None and not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


# Field types that validate themselves (instead of a validator method per field): a byte count
# that also takes a unit (64MiB), and a file that must exist when it is set.
ByteSize = Annotated[int, BeforeValidator(parse_size)]
ExistingFile = Annotated[Path | None, AfterValidator(existing_file)]
