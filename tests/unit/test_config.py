from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ollama_openai_bridge import cli
from ollama_openai_bridge.config import ConfigError, Settings, load_settings, parse_size
from ollama_openai_bridge.model_map import ModelMeta


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.openai_api_base_url == "https://api.openai.com/v1"
    assert (s.proxy_host, s.proxy_port) == ("127.0.0.1", 11434)
    assert s.max_connections >= 10000
    assert s.request_max_size == 64 * 1024 * 1024
    breaker = (
        s.circuit_breaker_failure_rate,
        s.circuit_breaker_window,
        s.circuit_breaker_min_calls,
        s.circuit_breaker_threshold,
        s.circuit_breaker_half_open_calls,
        s.circuit_breaker_cooldown,
    )
    assert breaker == (50.0, 30, 20, 5, 3, 30.0)


def test_env_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "OPENAI_API_BASE_URL=http://localhost:8000/v1/\nOPENAI_API_KEY=sk-dotenv\n"
    )
    monkeypatch.setenv("PROXY_PORT", "8080")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example, *.example.org")
    monkeypatch.setenv("PASSTHROUGH_OPTIONS", "top_k, repeat_penalty=repetition_penalty")
    monkeypatch.setenv("REQUEST_MAX_SIZE", "10MiB")
    s = load_settings()
    assert s.openai_api_base_url == "http://localhost:8000/v1"
    assert s.openai_api_key.get_secret_value() == "sk-dotenv"
    assert "sk-dotenv" not in repr(s)
    assert s.proxy_port == 8080
    assert s.log_level == "DEBUG"
    assert s.cors_origins == ["https://a.example", "https://b.example", "*.example.org"]
    assert s.policy().passthrough == {"top_k": "top_k", "repeat_penalty": "repetition_penalty"}
    assert s.request_max_size == 10 * 1024 * 1024


@pytest.mark.parametrize(
    "name",
    [
        "request_max_size",
        "response_max_size",
        "request_headers_max_size",
        "response_cache_max_bytes",
        "response_cache_max_entry_bytes",
    ],
)
def test_every_byte_count_takes_a_unit_and_refuses_nonsense(name: str) -> None:
    """One field type (config.parsing.ByteSize) for every byte count: the same units
    everywhere, the same message for a bad one, the field's own bounds still applied."""
    values: dict[str, Any] = {"_env_file": None, name: "2MiB"}
    if name == "response_cache_max_entry_bytes":
        values["response_cache_max_bytes"] = "4MiB"
    assert getattr(Settings(**values), name) == 2 * 1024 * 1024
    with pytest.raises(ValidationError, match=name):
        Settings(**{**values, name: "2 bananas"})
    with pytest.raises(ValidationError, match=name):
        Settings(**{**values, name: "0"})


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        (
            "OPENAI_API_BASE_URL",
            "localhost:8000",
            "OPENAI_API_BASE_URL: Value error, must be an http:// or https:// URL",
        ),
        ("PROXY_PORT", "99999", "PROXY_PORT: Input should be less than or equal to 65535"),
        ("PROXY_PORT", "abc", "PROXY_PORT: Input should be a valid integer"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: Input should be"),
        ("REQUEST_TIMEOUT", "-1", "REQUEST_TIMEOUT: Input should be greater than 0"),
        ("MAX_RETRIES", "99", "MAX_RETRIES"),
        ("REQUEST_MAX_SIZE", "lots", "REQUEST_MAX_SIZE: Value error, not a size"),
        (
            "MODEL_MAPPING_FILE",
            "/nonexistent.json",
            "MODEL_MAPPING_FILE: Value error, file not found",
        ),
        ("OLLAMA_VERSION", "latest", "OLLAMA_VERSION"),
        ("CONTEXT_SIGNING_KEY", "short", "CONTEXT_SIGNING_KEY: Value error, must be at least 32"),
        (
            "CORS_ORIGINS",
            "chrome-extension://*, example.com",
            "CORS_ORIGINS: Value error, 'example.com' is not an origin: use scheme://host[:port]",
        ),
        ("BACKEND_PROFILE", "openia", "BACKEND_PROFILE: Value error, unknown profile 'openia'"),
        ("BACKEND_EXTRA_BODY", "{nope", "BACKEND_EXTRA_BODY: Value error, not JSON"),
        ("BACKEND_EXTRA_BODY", '{"stream": false}', "may not set ['stream']"),
        ("BACKEND_HEADERS", '{"X-A": 1}', "the value of X-A must be printable ASCII text"),
        ("THINK_STYLE", "reasoning", "THINK_STYLE"),
        ("DEBUG", "perhaps", "DEBUG"),
        ("CIRCUIT_BREAKER_THRESHOLD", "-1", "CIRCUIT_BREAKER_THRESHOLD: Input should be greater"),
        (
            "CIRCUIT_BREAKER_FAILURE_RATE",
            "0",
            "CIRCUIT_BREAKER_FAILURE_RATE: Input should be greater than 0",
        ),
        (
            "CIRCUIT_BREAKER_FAILURE_RATE",
            "150",
            "CIRCUIT_BREAKER_FAILURE_RATE: Input should be less than or equal to 100",
        ),
        (
            "CIRCUIT_BREAKER_WINDOW",
            "0.5",
            "CIRCUIT_BREAKER_WINDOW: Input should be a valid integer",
        ),
        (
            "CIRCUIT_BREAKER_WINDOW",
            "86400",
            "CIRCUIT_BREAKER_WINDOW: Input should be less than or equal to 3600",
        ),
        ("CIRCUIT_BREAKER_MIN_CALLS", "0", "CIRCUIT_BREAKER_MIN_CALLS: Input should be greater"),
        ("MAX_OUTPUT_TOKENS", "-1", "MAX_OUTPUT_TOKENS: Input should be greater than or equal"),
        ("MAX_OUTPUT_TOKENS", "16k", "MAX_OUTPUT_TOKENS: Input should be a valid integer"),
        (
            "CIRCUIT_BREAKER_HALF_OPEN_CALLS",
            "0",
            "CIRCUIT_BREAKER_HALF_OPEN_CALLS: Input should be greater",
        ),
        ("CIRCUIT_BREAKER_COOLDOWN", "0", "CIRCUIT_BREAKER_COOLDOWN: Input should be greater"),
    ],
)
def test_invalid_values_give_one_clear_message(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("invalid configuration:")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("1KB", 1000),
        ("1kib", 1024),
        ("2MB", 2_000_000),
        ("1.5GiB", 1610612736),
        (77, 77),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    return path


def test_model_mapping_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "llama3": "meta-llama/Llama-3.1-8B",
            "gpt-4o": {"context_length": 128000, "capabilities": ["completion", "vision"]},
            "coder": {"model": "qwen2.5-coder"},
            "ds": {"model": "deepseek-chat", "max_output_tokens": 8192},
        },
    )
    mm = load_settings(model_mapping_file=path).model_map()
    assert mm.entries == {
        "llama3": ModelMeta("meta-llama/Llama-3.1-8B"),
        "gpt-4o": ModelMeta("gpt-4o", 128000, ("completion", "vision")),
        "coder": ModelMeta("qwen2.5-coder"),
        "ds": ModelMeta("deepseek-chat", max_output_tokens=8192),
    }


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([1], "must be a JSON object"),
        ({"a": 3}, "entry 'a': must be an upstream model id or an object"),
        ({"a": {"model": ""}}, "entry 'a': 'model' must be a non-empty string"),
        ({"a": {"context_length": -5}}, "'context_length' must be a positive integer"),
        ({"a": {"max_output_tokens": "8k"}}, "'max_output_tokens' must be a positive integer"),
        ({"a": {"max_output_tokens": 0}}, "'max_output_tokens' must be a positive integer"),
        ({"a": {"capabilities": ["flying"]}}, "'capabilities' must be a list of"),
    ],
)
def test_invalid_mapping_file_names_file_and_entry(
    tmp_path: Path, data: object, fragment: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_settings(model_mapping_file=path)
    assert str(path) in str(info.value)


def test_mapping_file_not_json(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="cannot read JSON"):
        load_settings(model_mapping_file=path)


def test_prometheus_alias_and_tls_pair(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENABLE_PROMETHEUS_METRICS", "false")
    assert load_settings().enable_metrics is False
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="SSL_CERTFILE and SSL_KEYFILE must be set together"):
        load_settings(ssl_certfile=cert)


def test_max_output_tokens_is_the_policys_fallback_limit() -> None:
    assert load_settings(_env_file=None).policy().max_output_tokens is None  # 0: no limit
    assert load_settings(_env_file=None, max_output_tokens=16384).policy().max_output_tokens == (
        16384
    )


def test_recycling_needs_an_idle_period() -> None:
    assert load_settings(memory_recycle_above_mb=20).memory_recycle_above_mb == 20
    with pytest.raises(ConfigError, match="MEMORY_RECYCLE_ABOVE_MB needs MEMORY_RELEASE_AFTER"):
        load_settings(memory_recycle_above_mb=20, memory_release_after_idle=0)


def test_inbound_keys_file_and_secret_repr(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# comment\n  key-a  \n\nkey-b\n")
    s = load_settings(proxy_api_keys="key-c", proxy_api_keys_file=path)
    assert s.inbound_keys() == ["key-c", "key-a", "key-b"]
    assert "key-c" not in repr(s)


def test_backend_profile_extra_body_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE_URL", "https://api.groq.com/openai/v1")
    monkeypatch.setenv("BACKEND_EXTRA_BODY", '{"reasoning_format": "parsed"}')
    monkeypatch.setenv("BACKEND_HEADERS", '{"Authorization-Extra": "tok-xyz-987"}')
    s = load_settings()
    (spec,) = s.topology().upstreams
    assert (spec.profile, s.think_style) == ("auto", "auto")
    assert spec.extra_body == {"reasoning_format": "parsed"}
    assert spec.headers == {"Authorization-Extra": "tok-xyz-987"}
    assert "tok-xyz-987" in s.secrets()
    monkeypatch.setenv("BACKEND_PROFILE", "vllm")
    assert load_settings().topology().upstreams[0].profile == "vllm"


def test_the_context_signing_key_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "s3cr3t-" * 6
    monkeypatch.setenv("CONTEXT_SIGNING_KEY", key)
    s = load_settings(_env_file=None)
    assert key not in repr(s)
    assert key in s.secrets()  # redacted from every log line and error body


def test_one_random_context_key_for_the_whole_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unset: the command draws one key and puts it in the environment its workers and
    # recycled processes read, so they all accept each other's contexts (cli.py).
    # setenv, not delenv: an absent variable deleted is not restored when cli sets it
    monkeypatch.setenv("CONTEXT_SIGNING_KEY", "")
    s = cli._one_context_key(load_settings(_env_file=None))
    key = s.context_signing_key.get_secret_value()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert os.environ["CONTEXT_SIGNING_KEY"] == key
    assert load_settings(_env_file=None).context_signing_key.get_secret_value() == key
    assert cli._one_context_key(s) is s  # set: kept as it is


def test_each_name_in_the_settings_parts_is_defined_once() -> None:
    """Settings combines one pydantic model per concern (config/*.py). A field, validator or
    method name used in two of them would silently hide one (pydantic keeps one validator per
    name, Python one attribute): each is defined in one part, and every part's validators are
    Settings' own."""
    parts = [
        c
        for c in Settings.__mro__[1:]
        if issubclass(c, BaseModel) and c.__module__.startswith("ollama_openai_bridge.config.")
    ]
    assert sum(len(part.model_fields) for part in parts) == len(Settings.model_fields)
    owner: dict[str, str] = {}
    for part in parts:
        names = {*vars(part), *vars(part).get("__annotations__", {})}
        for name in names - {"model_config", "model_post_init", "_abc_impl"}:
            if not name.startswith("__"):
                assert name not in owner, f"{name} in {owner[name]} and {part.__name__}"
                owner[name] = part.__name__
    validators = Settings.__pydantic_decorators__
    assert {*validators.field_validators, *validators.model_validators} == {
        name
        for part in parts
        for name in (
            *part.__pydantic_decorators__.field_validators,
            *part.__pydantic_decorators__.model_validators,
        )
    }
    assert owner["topology"] == "BackendSettings"  # the parts were found by their module
