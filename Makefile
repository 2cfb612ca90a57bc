# Developer tasks. `make test` is the project's one test command (README, CI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test lint typecheck unit run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Editable install with test tools, plus the npm-based upstream mock the tests drive.
dev: $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/aimock --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the aimock tests will fail (REQUIRE_AIMOCK=1)"; fi

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev
	$(BIN)/mypy

# Everything CI checks: lint, types, all tests with coverage floors (overall 85%, translate/ 95%).
test: lint typecheck
	REQUIRE_AIMOCK=1 $(BIN)/pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=85
	$(BIN)/coverage report --include='*/ollama_openai_proxy/translate/*' --fail-under=95

unit: dev
	$(BIN)/pytest tests/unit -q

run: dev
	$(BIN)/ollama-openai-proxy

clean:
	rm -rf $(VENV) tests/aimock/node_modules .coverage .pytest_cache .mypy_cache .ruff_cache
