"""Reads CHANGELOG.md (Keep a Changelog 1.1.0: https://keepachangelog.com/en/1.1.0/).

The release workflow runs ``python scripts/changelog.py VERSION``: it prints the entry of that
version (the GitHub release's notes) and fails when the changelog has no dated entry for it, or
when the package's ``__version__`` is another one, so a tag can only publish what was written up.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# "## [1.2.0] - 2026-12-01" or "## [Unreleased]"
HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-.]?(?:a|b|rc)\d+)?$")
# What the release workflow publishes: final versions only. A pre-release would move the image's
# X.Y tag and then fail at the chart (Helm wants SemVer, PEP 440 writes 1.0.0rc1), with the
# images pushed and PyPI not (the second review of #19, L1): refused before anything runs.
RELEASE = re.compile(r"^\d+\.\d+\.\d+$")
LINK = re.compile(r"^\[[^\]]+\]: \S+")
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


@dataclass(frozen=True)
class Entry:
    """One ``## [name] - date`` section; ``released`` is None for ``[Unreleased]``."""

    name: str
    released: date | None
    body: str


def entries(text: str) -> list[Entry]:
    """The sections in file order. Raises ValueError on a heading that breaks the format: a
    version that is not X.Y.Z, a release without a date, a change kind Keep a Changelog does
    not name (``### Added`` ... ``### Security``). Link definitions (``[1.0.0]: https://...``)
    belong to no section."""
    found: list[Entry] = []
    for section in re.split(r"^(?=## )", text, flags=re.MULTILINE)[1:]:
        heading, _, rest = section.partition("\n")
        match = HEADING.match(heading)
        if match is None:
            raise ValueError(f"not a Keep a Changelog heading: {heading!r}")
        name, released = match["name"], None
        if name != "Unreleased":
            if not SEMVER.match(name) or match["date"] is None:
                raise ValueError(f"a release needs an X.Y.Z version and a date: {heading!r}")
            released = date.fromisoformat(match["date"])
        body = [line for line in rest.splitlines() if not LINK.match(line)]
        for line in body:
            kind = line.removeprefix("### ").strip()
            if line.startswith("### ") and kind not in KINDS:
                raise ValueError(f"unknown kind of change {kind!r} under [{name}]")
        found.append(Entry(name, released, "\n".join(body).strip()))
    return found


def notes(text: str, version: str) -> str:
    """The body of the dated entry for ``version`` (markdown). Raises LookupError when there is
    none, or when it is empty."""
    for entry in entries(text):
        if entry.name == version and entry.released is not None:
            if not entry.body:
                raise LookupError(f"the changelog's entry for {version} is empty")
            return entry.body
    raise LookupError(
        f"CHANGELOG.md has no entry '## [{version}] - YYYY-MM-DD': move the [Unreleased] "
        "changes under it before tagging"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print a release's notes from CHANGELOG.md")
    parser.add_argument("version", help="X.Y.Z, or a tag vX.Y.Z")
    parser.add_argument("--changelog", type=Path, default=ROOT / "CHANGELOG.md")
    parser.add_argument(
        "--package-version",
        default=None,
        help="the version the package declares (default: ollama_openai_bridge.__version__)",
    )
    args = parser.parse_args(argv)
    version = args.version.removeprefix("v")
    if not RELEASE.match(version):
        print(
            f"{version} is not X.Y.Z: the release workflow publishes final versions only",
            file=sys.stderr,
        )
        return 1
    declared = args.package_version
    if declared is None:
        init = (ROOT / "src" / "ollama_openai_bridge" / "__init__.py").read_text()
        found = re.search(r'^__version__ = "([^"]+)"', init, re.MULTILINE)
        declared = found[1] if found else "unknown"
    if declared != version:
        print(f"the tag says {version}, the package says {declared}", file=sys.stderr)
        return 1
    try:
        print(notes(args.changelog.read_text(), version))
    except (LookupError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
