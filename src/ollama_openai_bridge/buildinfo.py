"""What ``/v1/version`` reports: the proxy's version, its git commit and build date when known,
the Python running it, and the versions of the libraries that shape its behaviour."""

from __future__ import annotations

import os
import platform
import subprocess  # nosec B404
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ollama_openai_bridge import __version__, allocator

DEPENDENCIES = ("fastapi", "starlette", "uvicorn", "aiohttp", "orjson", "pydantic", "structlog")


def _git_commit() -> str | None:
    # Container builds pass GIT_COMMIT; a source checkout can ask git (once, at first request).
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        # bandit B404 (the import), B603, B607: a fixed argument list, no shell; `git` from PATH,
        # as a developer's checkout finds it (an image passes GIT_COMMIT and never gets here)
        out = subprocess.run(  # nosec B603 B607
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@cache
def build_info() -> dict[str, Any]:
    return {
        "name": "ollama-openai-bridge",
        "version": __version__,
        "git_commit": _git_commit(),
        "build_date": os.environ.get("BUILD_DATE"),
        "python": platform.python_version(),
        "allocator": allocator.current(),
        "dependencies": {name: _version(name) for name in DEPENDENCIES},
    }
