#!/usr/bin/env bash
# Supply-chain checks: `make security`, which `make test` runs first. Each takes seconds.
#   bandit          src/, scripts/ and bench/: every finding is fixed or explained inline
#                   (`# bandit Bxxx: why` above a `# nosec Bxxx`); bench/'s three skips below
#   detect-secrets  the tracked files, against .secrets.baseline, whose every entry was audited
#                   as not a secret; a new finding fails until it is audited (docs/RELEASING.md);
#                   with the plugins of scripts/secret_plugins.py (Anthropic, OpenRouter, Groq
#                   and Google keys, which detect-secrets has no detector for)
#   pip-audit       the known vulnerabilities of the locked test set (requirements/test.lock)
#   cyclonedx-py    the SBOM of what `pip install` of the package brings: build/sbom.cdx.json
#   zizmor          the GitHub workflows: actions pinned to commits, no credential left in a
#                   checkout, least permissions, no cache a release could be poisoned through
# pip-audit asks PyPI's per-release JSON API; where that cannot be reached (this project's own
# machines reach the package index but not that API) it is skipped with a visible message,
# unless REQUIRE_AUDIT=1 (the GitHub workflow), where a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
mkdir -p build

echo "== bandit: src/ scripts/ bench/"
# B101 (assert) is skipped: the asserts in src/ narrow a type for mypy after the code made it
# so (current_task() inside a task, the exception class a handler is registered for, ...);
# none checks input, so running with -O, which drops them, changes nothing a client can reach.
"$BIN/bandit" -q -r src scripts --skip B101
# bench/ is the developers' benchmark harness, run by hand against loopback, never shipped (the
# wheel and the image hold src/ alone). Skipped there: B404 and B603 (it starts the proxy, the
# fake backend and wrk with subprocess, always an argument list built in the file, never a
# shell or a string from outside) and B311 (random picks the prompts and the workload's timing,
# where a predictable generator is what a repeatable benchmark wants). Any other finding fails.
"$BIN/bandit" -q -r bench --skip B101,B311,B404,B603

echo "== zizmor: .github/ (offline, every persona: pedantic and auditor findings included)"
"$BIN/zizmor" --offline --persona auditor --quiet .github/

echo "== detect-secrets: tracked files against .secrets.baseline"
# The scan updates a copy (line numbers move); the tracked baseline is only read, so the check
# leaves the tree as it found it. -n: no network call to "verify" a candidate with its service.
cp .secrets.baseline build/secrets.baseline
"$BIN/detect-secrets" scan -n --baseline build/secrets.baseline
"$BIN/python" scripts/secrets_check.py build/secrets.baseline

echo "== pip-audit: requirements/test.lock"
probe_version=$("$BIN/python" -c "import importlib.metadata as m; print(m.version('pip'))")
if "$BIN/python" - "$probe_version" <<'EOF'; then
import sys
import urllib.request

url = f"https://pypi.org/pypi/pip/{sys.argv[1]}/json"
try:
    with urllib.request.urlopen(url, timeout=10) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
EOF
  # --disable-pip --require-hashes: the lock is complete and hashed, nothing to resolve;
  # --strict: a package that could not be audited fails the check too.
  "$BIN/pip-audit" -r requirements/test.lock --require-hashes --disable-pip --strict \
    --progress-spinner off
elif [ "${REQUIRE_AUDIT:-}" = 1 ]; then
  echo "pip-audit: PyPI's JSON API is not reachable, and REQUIRE_AUDIT=1" >&2
  exit 1
else
  echo "*** pip-audit skipped: PyPI's per-release JSON API is not reachable from here; the GitHub workflow runs it (REQUIRE_AUDIT=1) ***"
fi

echo "== SBOM: build/sbom.cdx.json (CycloneDX, runtime lock)"
# A lock file lists packages, not who needs whom, and cyclonedx-py warns that the graph is
# incomplete: the release's SBOM is built from an installed environment instead, with the graph
# (.github/workflows/release.yml).
PYTHONWARNINGS=ignore::UserWarning "$BIN/cyclonedx-py" requirements requirements/run.lock \
  --pyproject pyproject.toml --output-reproducible -o build/sbom.cdx.json
echo "build/sbom.cdx.json: $("$BIN/python" -c \
  "import json; print(len(json.load(open('build/sbom.cdx.json'))['components']))") components"
