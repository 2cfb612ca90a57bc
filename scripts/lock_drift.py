"""Whether a virtualenv still holds what a lock file names: the Makefile runs it before every
test target, and installs the lock again when it reports a difference.

A stamp file (``.venv/.stamp-test``) only knows that the lock was installed once; a later
``.venv/bin/pip install ollama==0.6.2`` (README's own example of trying a client) would leave
every later ``make test`` on the wrong client (issue #19's review, M4). Comparing the installed
versions with the lock takes a fraction of a second, where a ``pip install`` of 190 satisfied
requirements takes several.

Usage: python scripts/lock_drift.py LOCK  (exit 1 and one line per difference, else 0)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?\s*$")


def locked(text: str) -> dict[str, str]:
    """``{canonical name: version}`` of a pip-compile/uv lock, for this interpreter (a
    universal lock may pin a package once per Python range, under an environment marker)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match is None:
            continue
        name, pinned, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        found[str(canonicalize_name(name))] = pinned
    return found


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def differences(text: str, installed: Callable[[str], str | None] = _installed) -> list[str]:
    """``name: locked X, installed Y`` (or ``not installed``) for each package of the lock
    whose installed version differs; empty when the environment holds the lock."""
    out = []
    for name, pinned in sorted(locked(text).items()):
        have = installed(name)
        if have != pinned:
            out.append(f"{name}: locked {pinned}, installed {have or 'nothing'}")
    return out


def main(argv: list[str]) -> int:
    """Prints the differences and returns 1 if there are any."""
    (lock,) = argv
    found = differences(Path(lock).read_text())
    for line in found:
        print(f"{lock}: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
