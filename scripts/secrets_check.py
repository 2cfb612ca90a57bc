"""Fails on a detect-secrets finding nobody audited (`make security`, scripts/security.sh).

``detect-secrets scan --baseline COPY`` adds this scan's findings to a copy of .secrets.baseline
and keeps the verdict of those already audited; every finding must then carry
``"is_secret": false`` -- a fake that a person looked at (`make secrets-baseline`).
Usage: python scripts/secrets_check.py BASELINE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def unaudited(baseline: Path) -> list[str]:
    """``path:line: type`` of each finding in a detect-secrets baseline file not audited as a
    fake. Raises OSError or ValueError when the file is missing or not a baseline."""
    results = json.loads(baseline.read_text())["results"]
    return [
        f"{path}:{found['line_number']}: {found['type']}"
        for path, secrets in results.items()
        for found in secrets
        if found.get("is_secret") is not False
    ]


def main(argv: list[str]) -> int:
    """Prints the unaudited findings and returns 1 if there are any, else a count and 0."""
    (baseline,) = argv
    found = unaudited(Path(baseline))
    if found:
        print("possible secrets not audited in .secrets.baseline:")
        print("\n".join(f"  {line}" for line in found))
        print("remove them or, if they are fakes, `make secrets-baseline` (docs/RELEASING.md)")
        return 1
    total = sum(map(len, json.loads(Path(baseline).read_text())["results"].values()))
    print(f"{total} findings, all audited as not secrets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
