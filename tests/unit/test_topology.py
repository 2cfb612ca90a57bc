"""UPSTREAMS_FILE: what a valid file becomes, and the message each mistake stops start-up with."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_openai_bridge.balance_config import BalanceSpec, OutlierSpec, ReplicaSpec
from ollama_openai_bridge.config import ConfigError, load_settings
from ollama_openai_bridge.topology import Topology, TopologyError, UpstreamSpec, load, single

VALID = """
upstreams:
  - name: openai
    base_url: https://api.openai.com/v1/
    api_key_env: OPENAI_API_KEY
    models: ["gpt-*", "o*"]
    timeout: 60
  - name: local
    base_url: http://127.0.0.1:8000/v1
    extra_params: [top_k, num_ctx]
aliases:
  llama3: local:meta-llama/Llama-3.1-8B-Instruct
fallbacks:
  gpt-4o-mini: [openai, local, openai]
"""


def write(tmp_path: Path, text: str, name: str = "upstreams.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_file(tmp_path: Path) -> None:
    topology = load(write(tmp_path, VALID), {"OPENAI_API_KEY": "sk-1"})
    assert topology == Topology(
        (
            UpstreamSpec("openai", "https://api.openai.com/v1", "sk-1", ("gpt-*", "o*"), 60.0),
            UpstreamSpec("local", "http://127.0.0.1:8000/v1", "", None, None, ("top_k", "num_ctx")),
        ),
        {"llama3": ("local", "meta-llama/Llama-3.1-8B-Instruct")},
        {"gpt-4o-mini": ("openai", "local")},
        from_file=True,
    )
    assert "sk-1" not in repr(topology)  # keys stay out of reprs (and so out of logs)


def test_json_works_too(tmp_path: Path) -> None:
    path = write(tmp_path, '{"upstreams": [{"name": "a", "base_url": "http://h/v1"}]}', "u.json")
    assert load(path, {}).names == ("a",)


def test_default_is_one_upstream() -> None:
    assert single("http://h/v1/", "k") == Topology((UpstreamSpec("default", "http://h/v1", "k"),))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just a list", "must be a mapping with an 'upstreams' list"),
        ("upstreams: []", "'upstreams' must be a non-empty list"),
        (
            "upstreams: [{name: a, base_url: 'http://h'}]\nfallback: {}",
            "unknown key(s) ['fallback']",
        ),
        ("upstreams: [{base_url: 'http://h'}]", "upstreams[0]: 'name' must be letters"),
        ("upstreams: [{name: 'a:b', base_url: 'http://h'}]", "(no ':')"),
        (
            "upstreams: [{name: a, base_url: 'localhost:8000'}]",
            "upstreams[0] (a): 'base_url' must be an http(s) URL, got 'localhost:8000'",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', key: x}]",
            "upstreams[0] (a): unknown key(s) ['key']",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h'}, {name: a, base_url: 'http://i'}]",
            "upstreams[1]: name 'a' is used twice",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', api_key_env: MISSING_VAR}]",
            "environment variable MISSING_VAR (api_key_env) is not set",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', api_key: x, api_key_env: Y}]",
            "give 'api_key' or 'api_key_env', not both",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', models: []}]",
            "'models' must be a non-empty list of globs",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', timeout: 0}]",
            "'timeout' must be a positive number",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', max_output_tokens: 0}]",
            "'max_output_tokens' must be a positive integer",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', extra_params: top_k}]",
            "'extra_params' must be a list",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h'}]\naliases: {x: 'b:m'}",
            "aliases['x']: unknown upstream 'b'",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h'}]\naliases: {x: 'no-upstream'}",
            "aliases['x']: must be 'upstream:model'",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h'}]\nfallbacks: {m: [a, z]}",
            "fallbacks['m']: unknown upstream(s) ['z']",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h'}]\nfallbacks: {m: a}",
            "fallbacks['m']: must be a non-empty list",
        ),
        ("upstreams: [", "cannot read it"),
        (
            "upstreams: [{name: a, base_url: 'http://h', profile: openai-ish}]",
            "unknown 'profile' 'openai-ish'; expected auto or one of",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', extra_body: [1]}]",
            "'extra_body' must be an object of request fields",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', extra_body: {model: x}}]",
            "'extra_body' may not set ['model']",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', headers: {'bad name': x}}]",
            "'headers': 'bad name' is not a header name",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', headers: {X-A: \"line\\nbreak\"}}]",
            "'headers': the value of X-A must be printable ASCII text",
        ),
        (
            "upstreams: [{name: a, base_url: 'http://h', headers: {Host: evil}}]",
            "'headers': Host is set by the proxy",
        ),
    ],
)
def test_each_mistake_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as info:
        load(path, {})
    assert str(info.value).startswith(f"UPSTREAMS_FILE {path}: ")
    assert message in str(info.value)


def test_profile_extra_body_and_headers_per_upstream(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "upstreams:\n"
        "  - {name: a, base_url: 'http://h/v1', profile: vllm,"
        " extra_body: {chat_template_kwargs: {enable_thinking: false}},"
        " headers: {X-Title: team, X-Api-Key: hush-hush-123}}\n"
        "  - {name: b, base_url: 'https://api.mistral.ai/v1', max_output_tokens: 8192}\n",
    )
    a, b = load(path, {}).upstreams
    assert (a.profile, b.profile) == ("vllm", "auto")
    assert (a.max_output_tokens, b.max_output_tokens) == (None, 8192)
    assert a.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}
    assert a.headers == {"X-Title": "team", "X-Api-Key": "hush-hush-123"}
    assert "hush-hush-123" not in repr(a)
    settings = load_settings(_env_file=None, upstreams_file=str(path))
    assert "hush-hush-123" in settings.secrets()  # redacted like a key
    assert "team" not in settings.secrets()


@pytest.mark.parametrize(
    "name", ["Ocp-Apim-Subscription-Key", "X-Portkey-Virtual-Key", "X-Key", "x-auth-token"]
)
def test_credential_headers_are_secrets(name: str) -> None:
    settings = load_settings(_env_file=None, backend_headers=f'{{"{name}": "cred-value-77"}}')
    assert "cred-value-77" in settings.secrets()


def test_start_up_stops_with_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, "upstreams: [{name: a, base_url: 'ftp://h'}]")
    with pytest.raises(ConfigError, match=r"upstreams\[0\] \(a\): 'base_url' must be an http"):
        load_settings(_env_file=None, upstreams_file=str(path))


def test_api_key_env_is_read_from_the_env_file_too(tmp_path: Path) -> None:
    path = write(
        tmp_path, "upstreams: [{name: a, base_url: 'http://h', api_key_env: KEY_IN_DOTENV}]"
    )
    env_file = tmp_path / ".env"
    env_file.write_text(f"UPSTREAMS_FILE={path}\nKEY_IN_DOTENV=sk-from-dotenv\n")
    settings = load_settings(_env_file=str(env_file))
    assert settings.topology().upstreams[0].api_key == "sk-from-dotenv"
    assert "sk-from-dotenv" in settings.secrets()  # redacted like OPENAI_API_KEY


def test_credentials_in_a_base_url_are_secrets_and_exclusive_with_a_key(tmp_path: Path) -> None:
    """user:password@ in a base URL is sent as Basic auth: the password is redacted like a key
    (the review found it in the ``started`` line), and a key beside it, which aiohttp refuses
    to combine on every request, stops the start with one message instead."""
    url = "https://team:basic-pw-4242@gateway.example/v1"
    settings = load_settings(_env_file=None, openai_api_base_url=url, openai_api_key="")
    assert "basic-pw-4242" in settings.secrets()
    assert "team" not in settings.secrets()
    message = r"upstream 'default': its base URL carries credentials .* keep one of them"
    with pytest.raises(ConfigError, match=message):
        load_settings(_env_file=None, openai_api_base_url=url, openai_api_key="sk-test-both")
    with pytest.raises(ConfigError, match=message):
        load_settings(
            _env_file=None, openai_api_base_url=url, backend_headers='{"Authorization": "x y"}'
        )
    path = write(
        tmp_path,
        f"upstreams: [{{name: gw, base_url: '{url}', api_key: sk-test-inline}}]\n",
    )
    with pytest.raises(ConfigError, match="upstream 'gw': its base URL carries credentials"):
        load_settings(_env_file=None, upstreams_file=str(path))


# --- replicas (base_urls, balance, outlier_detection: balance_config.py) ---------------------

REPLICAS = """
upstreams:
  - name: vllm
    base_urls:
      - http://gpu-a:8000/v1/
      - {url: "http://gpu-b:8000/v1", weight: 3}
      - {url: "https://gpu-c/v1", name: gpu-c}
    balance: affinity
    outlier_detection: {consecutive_failures: 3, base_ejection_time: 10, max_ejection_percent: 34}
"""


def test_replicas(tmp_path: Path) -> None:
    spec = load(write(tmp_path, REPLICAS), {}).upstreams[0]
    assert spec.base_url == "http://gpu-a:8000/v1"  # the first: profile detection, the store
    assert spec.balance == BalanceSpec(
        (
            ReplicaSpec("http://gpu-a:8000/v1", 1, "gpu-a:8000"),
            ReplicaSpec("http://gpu-b:8000/v1", 3, "gpu-b:8000"),
            ReplicaSpec("https://gpu-c/v1", 1, "gpu-c"),
        ),
        "affinity",
        OutlierSpec(3, 10.0, 300.0, 34),
    )


def test_replicas_default_to_least_outstanding(tmp_path: Path) -> None:
    text = "upstreams: [{name: a, base_urls: [http://h1/v1, https://h2/v1]}]"
    balance = load(write(tmp_path, text), {}).upstreams[0].balance
    assert balance == BalanceSpec(
        (ReplicaSpec("http://h1/v1", 1, "h1:80"), ReplicaSpec("https://h2/v1", 1, "h2:443")),
        "least_outstanding",
        OutlierSpec(5, 30.0, 300.0, 50),
    )


def test_one_base_url_in_a_list_is_a_plain_upstream(tmp_path: Path) -> None:
    spec = load(write(tmp_path, "upstreams: [{name: a, base_urls: [http://h/v1]}]"), {}).upstreams[
        0
    ]
    assert spec == UpstreamSpec("a", "http://h/v1")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: a, base_url: http://h/v1, base_urls: [http://h/v1]}",
            "upstreams[0] (a): give 'base_url' or 'base_urls', not both",
        ),
        ("{name: a, base_urls: []}", "'base_urls' must be a non-empty list"),
        ("{name: a, base_urls: [ftp://h]}", "'base_urls[0].url' must be an http(s) URL"),
        (
            "{name: a, base_urls: [{url: http://h, port: 1}]}",
            "base_urls[0]: unknown key(s) ['port']",
        ),
        (
            "{name: a, base_urls: [{url: http://h, weight: 0}]}",
            "'weight' must be an integer from 1",
        ),
        ("{name: a, base_urls: [{url: http://h, weight: 1.5}]}", "'weight' must be an integer"),
        ("{name: a, base_urls: [http://h/v1, http://h/v1]}", "URL 'http://h/v1' is used twice"),
        (
            "{name: a, base_urls: [http://h/v1, http://h/v2]}",
            "name 'h:80' is used twice (give each a 'name')",
        ),
        ("{name: a, base_urls: [{url: http://h, name: 'a b'}]}", "'name' must be letters"),
        (
            "{name: a, base_urls: [http://h1, http://h2], balance: random}",
            "unknown 'balance' 'random'",
        ),
        (
            "{name: a, base_url: http://h, balance: affinity}",
            "'balance' needs 'base_urls' with two",
        ),
        ("{name: a, base_urls: [http://h], outlier_detection: {}}", "'outlier_detection' needs"),
        (
            "{name: a, base_urls: [http://h1, http://h2], outlier_detection: {interval: 1}}",
            "'outlier_detection': unknown key(s) ['interval']",
        ),
        (
            "{name: a, base_urls: [http://h1, http://h2], outlier_detection: {consecutive_failures: -1}}",
            "'outlier_detection.consecutive_failures' must be an integer >= 0",
        ),
        (
            "{name: a, base_urls: [http://h1, http://h2], outlier_detection: {base_ejection_time: 0}}",
            "'outlier_detection.base_ejection_time' must be a positive number",
        ),
        # YAML floats that are not numbers of seconds (issue #20's review, M3)
        (
            "{name: a, base_urls: [http://h1, http://h2], outlier_detection: {base_ejection_time: .nan}}",
            "'outlier_detection.base_ejection_time' must be a positive number",
        ),
        (
            "{name: a, base_urls: [http://h1, http://h2], outlier_detection: {max_ejection_time: .inf}}",
            "'outlier_detection.max_ejection_time' must be a positive number",
        ),
        (
            "{name: a, base_urls: [http://h1, http://h2], "
            "outlier_detection: {base_ejection_time: 60, max_ejection_time: 30}}",
            "'outlier_detection.max_ejection_time' must be at least base_ejection_time",
        ),
        (
            "{name: a, base_urls: [http://h1, http://h2], outlier_detection: {max_ejection_percent: 101}}",
            "'outlier_detection.max_ejection_percent' must be from 0 to 100",
        ),
    ],
)
def test_each_replica_mistake_is_named(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        load(write(tmp_path, f"upstreams: [{entry}]"), {})
    assert message in str(err.value)
    assert str(err.value).startswith(
        f"UPSTREAMS_FILE {tmp_path / 'upstreams.yaml'}: upstreams[0] (a): "
    )


def test_credentials_in_a_replica_url_are_refused(tmp_path: Path) -> None:
    """Replicas share one client, chosen by the first URL; Basic auth from a URL is aiohttp's
    alone, so a replica's user:password@ would be dropped or refused by the other client."""
    path = write(
        tmp_path,
        "upstreams: [{name: v, base_urls: ['http://a:8000/v1', 'http://u:pw-test@b:8000/v1']}]",
    )
    with pytest.raises(ConfigError, match=r"base_urls\[1\]: credentials in a replica's URL"):
        load_settings(_env_file=None, upstreams_file=str(path))
