"""CHANGELOG.md keeps Keep a Changelog's shape, and scripts/changelog.py gives the release
workflow a tag's notes -- or refuses the tag."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from scripts.changelog import entries, main, notes

from ollama_openai_bridge import __version__

ROOT = Path(__file__).resolve().parents[2]
RELEASED = """# Changelog

## [Unreleased]

### Fixed

- something after 1.2.0

## [1.2.0] - 2026-12-01

### Added

- the thing

### Security

- the hole

## [1.1.0] - 2026-11-01

### Removed

- the old thing

[Unreleased]: https://example.invalid/compare/v1.2.0...HEAD
[1.2.0]: https://example.invalid/compare/v1.1.0...v1.2.0
"""


def test_the_changelog_keeps_the_format() -> None:
    found = entries((ROOT / "CHANGELOG.md").read_text())
    assert found, "no entry at all"
    assert found[0].name == "Unreleased"
    names = [e.name for e in found]
    assert len(names) == len(set(names))
    dates = [e.released for e in found if e.released is not None]
    assert dates == sorted(dates, reverse=True), "newest first"
    # the version the package carries is either released (it has its entry) or coming
    assert __version__ in names or found[0].body


def test_notes_are_the_entry_of_that_version() -> None:
    body = notes(RELEASED, "1.2.0")
    assert body == "### Added\n\n- the thing\n\n### Security\n\n- the hole"
    assert notes(RELEASED, "1.1.0") == "### Removed\n\n- the old thing"  # no link lines


def test_entries_read_dates_and_unreleased() -> None:
    found = entries(RELEASED)
    assert [(e.name, e.released) for e in found] == [
        ("Unreleased", None),
        ("1.2.0", date(2026, 12, 1)),
        ("1.1.0", date(2026, 11, 1)),
    ]


def test_a_version_without_its_entry_is_refused() -> None:
    with pytest.raises(LookupError, match=r"no entry '## \[1.3.0\] - YYYY-MM-DD'"):
        notes(RELEASED, "1.3.0")
    with pytest.raises(LookupError, match="no entry"):
        notes(RELEASED, "Unreleased")  # not a release


@pytest.mark.parametrize(
    ("heading", "error"),
    [
        ("## [1.3.0]", "needs an X.Y.Z version and a date"),
        ("## [next] - 2026-12-02", "needs an X.Y.Z version and a date"),
        ("## 1.3.0 - 2026-12-02", "not a Keep a Changelog heading"),
        ("## [1.3.0] - 2026-12-02\n\n### Improved\n\n- x", "unknown kind of change 'Improved'"),
    ],
)
def test_a_malformed_entry_is_refused(heading: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        entries(RELEASED.replace("## [1.2.0] - 2026-12-01", heading))


def test_main_checks_the_tag_against_the_package_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text(RELEASED)
    args = ["--changelog", str(changelog), "--package-version"]

    assert main(["v1.2.0", *args, "1.2.0"]) == 0
    assert capsys.readouterr().out == "### Added\n\n- the thing\n\n### Security\n\n- the hole\n"

    assert main(["v1.2.0", *args, "1.2.1"]) == 1
    assert "the tag says 1.2.0, the package says 1.2.1" in capsys.readouterr().err

    assert main(["v1.3.0", *args, "1.3.0"]) == 1
    assert "no entry '## [1.3.0]" in capsys.readouterr().err

    # a pre-release is refused before anything is published (images, then a failing chart)
    assert main(["v1.2.0rc1", *args, "1.2.0rc1"]) == 1
    assert "1.2.0rc1 is not X.Y.Z" in capsys.readouterr().err


def test_main_reads_the_package_version_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([f"v{__version__}"])
    err = capsys.readouterr().err
    assert "the package says" not in err
    # released: its notes print; not yet: the refusal names the entry to write
    assert code == 0 or f"no entry '## [{__version__}]" in err
