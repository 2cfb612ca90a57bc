#!/usr/bin/env bash
# Installs the third-party clients and mocks the test suite drives, once, and again only when
# their lock files change (a stamp per lock). Whatever cannot be installed here is reported, and
# its tests are skipped with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."

npm_folder() {  # npm ci in a folder, skipped when its lock file has not changed
  local dir=$1 flags=${2:-}
  local stamp="$dir/node_modules/.stamp-$(sha256sum "$dir/package-lock.json" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    # shellcheck disable=SC2086
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error $flags)
    touch "$stamp"
  fi
}

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  npm_folder tests/aimock
  npm_folder tests/js
  # Claude Code and OpenAI's Codex CLI (issue #17); each ships its native binary as an optional
  # dependency for the platform, so the lock lists all of them and npm installs this machine's.
  npm_folder tests/agents
  npm_folder tests/vercel
  tests/n8n/setup.sh
else
  echo "*** Node.js/npm not found: aimock, JS SDK, Vercel AI SDK, coding-agent and n8n tests will be skipped ***"
fi

# An old ollama SDK on the oldest Python that it supports (3.8), if the machine has one.
py38=$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.8*/bin/python3.8 2>/dev/null | head -n1 || true)
if [ -z "$py38" ] && python3.8 -c "" >/dev/null 2>&1; then py38=$(command -v python3.8); fi
# Its whole set locked with hashes for Python 3.8 (tests/py38/requirements.lock, `make lock`);
# installed again when the lock changes (a stamp per lock).
if [ -n "$py38" ]; then
  lock38=tests/py38/requirements.lock
  stamp38=".venv-py38/.stamp-$(sha256sum "$lock38" | cut -c1-16)"
  if [ ! -f "$stamp38" ] || ! .venv-py38/bin/python -c "import ollama" >/dev/null 2>&1; then
    rm -rf .venv-py38
    "$py38" -m venv .venv-py38
    .venv-py38/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
      -r "$lock38"
    touch "$stamp38"
  fi
else
  echo "*** Python 3.8 not found: the old-SDK test will be skipped ***"
fi

# LiteLLM's proxy: a real third-party OpenAI-compatible server the backend-profile tests put
# between the proxy and the fake backends (issue #15). Its own virtualenv, from a full lock with
# hashes (`make lock`): its pins (openai 2.x, rich 13, ...) conflict with the test environment's.
lock=tests/litellm/requirements.lock
stamp=".venv-litellm/.stamp-$(sha256sum "$lock" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  rm -rf .venv-litellm
  if "${PYTHON:-python3}" -m venv .venv-litellm \
    && .venv-litellm/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
      -r "$lock"; then
    touch "$stamp"
  else
    rm -rf .venv-litellm
    echo "*** could not install LiteLLM's proxy: its test will be skipped ***"
  fi
fi
