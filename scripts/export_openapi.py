"""Write docs/openapi.json from the app (default settings). tests/unit/test_openapi.py fails when
the committed file differs from what the app serves: run this after changing an endpoint.
``--check`` writes nothing and exits 1 if the file is stale (the pre-commit hook)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ollama_openai_bridge.app import create_app
from ollama_openai_bridge.config import load_settings

OUT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def document() -> str:
    app = create_app(load_settings(_env_file=None, openai_api_base_url="http://127.0.0.1:1/v1"))
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != document():
            sys.exit(f"{OUT} is stale: run python scripts/export_openapi.py")
    else:
        OUT.write_text(document())
        print(f"wrote {OUT}")
