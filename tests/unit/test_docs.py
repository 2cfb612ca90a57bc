"""Docs that must stay true: every setting documented with its default."""

from __future__ import annotations

import re
from pathlib import Path

from ollama_openai_proxy.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_with_its_default() -> None:
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", text, re.MULTILINE))
    assert set(rows) == {name.upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if hasattr(default, "get_secret_value"):
            default = default.get_secret_value()
        shown = rows[name.upper()].strip()
        if default in (None, "", {}, []):
            assert shown == "(unset)", name
        else:
            assert shown == f"`{default}`", name


def test_env_example_names_real_settings() -> None:
    names = re.findall(r"^#? ?([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert names
    assert set(names) <= {n.upper() for n in Settings.model_fields}


def test_readme_has_the_three_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "pip install ." in text
    assert "ollama-openai-proxy" in text
    assert "make test" in text
