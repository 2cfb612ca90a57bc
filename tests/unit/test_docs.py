"""Docs that must stay true: every setting documented with its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ollama_openai_bridge.config import Settings

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


def test_readme_has_the_two_commands() -> None:
    """One starts the proxy from a clone (into the clone's .venv, never a shared Python), one
    runs the tests; the port and the example's SDK are explained beside them (#19)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    assert any(b.strip().endswith("make run") and "OPENAI_API_BASE_URL=" in b for b in blocks)
    assert "make test\n" in blocks
    run = text.split("## Run", 1)[1].split("## Test", 1)[0]
    assert "`PROXY_PORT=8080 make run`" in run
    assert "pip install ollama" in run
    assert "`.venv`" in run
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: ", makefile, re.MULTILINE)
    assert re.search(r"^test: ", makefile, re.MULTILINE)


GUIDES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.md")]
)
# Upper-case names in the guides that are not settings: other programs' variables, build args.
NOT_SETTINGS = {
    "OLLAMA_HOST",  # the Ollama SDKs' variable, used by the examples
    "OPENAI_BASE_URL",  # the OpenAI SDK's, which the proxy refuses alone (config/settings.py)
    "OLLAMA_BASE_URL",  # Open WebUI's
    "OLLAMA_API_KEY",  # ollama-python's
    "OLLAMA_ORIGINS",  # Ollama's own, which CORS_ORIGINS follows
    "CHAT_MODEL",  # the examples'
    "EMBED_MODEL",
    "SSL_CERT_FILE",  # OpenSSL's CA bundle
    "HTTP_PROXY",  # the environment's proxies (egress.py), read as curl and aiohttp read them
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus_client's
    "PROXY_ENV_FILE",  # set by the CLI for its workers
    "PROXY_PUBLISH",  # docker-compose.yml's
    "GIT_COMMIT",  # image build arguments
    "BUILD_DATE",
    "LD_PRELOAD",  # the dynamic loader's
    "PYTHONMALLOC",  # CPython's
    "MALLOC_CONF",  # jemalloc's
    "REQUIRE_AIMOCK",  # test flags
    "REQUIRE_CLIENTS",
    "REQUIRE_PY38",
    "BENCH_FAIL_RATE",
    "ENABLE_PROMETHEUS_METRICS",  # accepted alias of ENABLE_METRICS
    "MAX_TOKENS",  # Gemini's finish reasons (BACKENDS.md)
    "MALFORMED_FUNCTION_CALL",
    "REQUIRE_AGENTS",  # test flag (tests/agents)
    "ANTHROPIC_BASE_URL",  # Claude Code's and the anthropic SDKs' (API_COMPATIBILITY.md)
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
    "REDIS_PASSWORD",  # the key of the Helm chart's Redis password in the Secret (DEPLOYMENT.md)
    "LOADTEST_CHAT_MODEL",  # bench/locustfile.py's (PERFORMANCE.md)
    "LOADTEST_TOOLS_MODEL",
    "LOADTEST_EMBED_MODEL",
    "LOADTEST_API_KEY",
    "LOADTEST_NUM_PREDICT",
    "LOADTEST_EMBED_BATCH",
    "LOADTEST_WAIT",
    "REQUIRE_AUDIT",  # scripts/security.sh's (RELEASING.md)
    "DOCKERHUB_REPOSITORY",  # the release workflow's repository variable and secrets
    "DOCKERHUB_USERNAME",
    "DOCKERHUB_TOKEN",
    "SOURCE_DATE_EPOCH",  # reproducible builds' timestamp
}


def test_guides_name_only_real_settings() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for guide in GUIDES:
        names = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])\b(?!_)", guide.read_text()))
        # OpenTelemetry's standard variables (tracing.py), which its SDK reads itself
        unknown = {n for n in names - settings - NOT_SETTINGS if not n.startswith("OTEL_")}
        assert not unknown, f"{guide.name} names {sorted(unknown)}"


def test_guides_link_to_files_that_exist() -> None:
    for guide in GUIDES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", guide.read_text()):
            if "://" in target:
                continue
            assert (guide.parent / target).exists(), f"{guide.name} links to {target}"


def test_the_guides_the_project_promises_exist() -> None:
    for name in (
        "QUICK_START",
        "CONFIGURATION",
        "API_COMPATIBILITY",
        "DEPLOYMENT",
        "TROUBLESHOOTING",
        "SECURITY",
        "ARCHITECTURE",
        "PERFORMANCE",
        "COMPATIBILITY",
    ):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name


FILE_SETTINGS = {
    "MODEL_MAPPING_FILE": '{"llama3": "meta-llama/Llama-3.1-8B-Instruct"}',
    "UPSTREAMS_FILE": "upstreams: [{name: local, base_url: 'http://127.0.0.1:8000/v1'}]",
    "PROXY_API_KEYS_FILE": "key-team-c\n",
    "TOKEN_BUDGETS_FILE": '"1c5ec5aa": {name: team-c, budget: 10k/minute}\n',
    "SSL_CERTFILE": "certificate",
    "SSL_KEYFILE": "key",
}


def test_every_setting_has_an_example_the_settings_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example, set as the environment variable, is accepted and changes the setting."""
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    examples = dict(re.findall(r"^\| `([A-Z_]+)` \| [^|]+ \| `([^`]+)` \|", text, re.MULTILINE))
    assert set(examples) == {name.upper() for name in Settings.model_fields}
    for name, example in examples.items():
        for var in {name.upper() for name in Settings.model_fields} | {"ENABLE_PROMETHEUS_METRICS"}:
            monkeypatch.delenv(var, raising=False)
        value = example
        if name in FILE_SETTINGS:  # the documented path stands for a file the operator writes
            path = tmp_path / Path(example).name
            path.write_text(FILE_SETTINGS[name])
            value = str(path)
            if name.startswith("SSL_"):  # the two go together
                for pair in ("SSL_CERTFILE", "SSL_KEYFILE"):
                    other = tmp_path / Path(examples[pair]).name
                    other.write_text(FILE_SETTINGS[pair])
                    monkeypatch.setenv(pair, str(other))
        monkeypatch.setenv(name, value)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        field = name.lower()
        assert getattr(settings, field) != Settings.model_fields[field].get_default(
            call_default_factory=True
        ), f"{name}={example} leaves the default"
