"""Each backend fake refuses the OpenAI reference request the way its backend's docs (or public
bug reports) say, and accepts the corrected one -- plain httpx, no proxy. These tests are the
table of issue #15: what the proxy sends today, what each backend answers, what it wants instead.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.backends import RULE_SETS
from tests.backends.wire import (
    BEARER,
    DROP,
    KEY,
    chat,
    chunks,
    deltas,
    error,
    joined,
    openai_err,
    reference,
)
from tests.fake_upstream import Script

# --- openai-reasoning -----------------------------------------------------------------------


def test_openai_reasoning_refuses_max_tokens_and_wants_max_completion_tokens(fake):
    f = fake("openai-reasoning")
    resp = chat(f, reference("o3-mini", reasoning_effort="medium"))
    assert error(resp, 400) == openai_err(
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "max_tokens",
        "unsupported_parameter",
    )
    resp = chat(f, reference("o3-mini", max_tokens=DROP, max_completion_tokens=64))
    assert error(resp, 400) == openai_err(
        "Unsupported value: 'temperature' does not support 0.2 with this model. "
        "Only the default (1) value is supported.",
        "temperature",
        "unsupported_value",
    )
    corrected = reference(
        "o3-mini", max_tokens=DROP, max_completion_tokens=64, temperature=DROP, seed=DROP
    )
    resp = chat(f, {**corrected, "reasoning_effort": "low"})
    assert resp.status_code == 200
    assert joined(resp) == "Hello!"
    # Chat Completions never shows the reasoning, only counts it.
    assert not any("reasoning" in d or "reasoning_content" in d for d in deltas(resp))
    usage = chunks(resp)[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0
    assert f.last()["thinking"] is True


@pytest.mark.parametrize(
    ("model", "effort", "supported"),
    [
        ("o3-mini", "minimal", "'low', 'medium', and 'high'"),
        ("o4-mini", "none", "'low', 'medium', and 'high'"),
        ("gpt-5", "none", "'minimal', 'low', 'medium', and 'high'"),
        ("gpt-5", "xhigh", "'minimal', 'low', 'medium', and 'high'"),
        ("gpt-5.1", "minimal", "'none', 'low', 'medium', and 'high'"),
        ("gpt-5.1", "xhigh", "'none', 'low', 'medium', and 'high'"),
        ("gpt-5-pro", "medium", "'high'"),
    ],
)
def test_openai_reasoning_efforts_depend_on_the_model(fake, model, effort, supported):
    f = fake("openai-reasoning")
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    resp = chat(f, {**body, "reasoning_effort": effort})
    assert error(resp, 400) == openai_err(
        f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model. "
        f"Supported values are: {supported}.",
        "reasoning_effort",
        "unsupported_value",
    )


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        ("o1", "high"),
        ("o3-mini", "low"),
        ("gpt-5", "minimal"),
        ("gpt-5-mini", "medium"),
        ("gpt-5.1", "none"),
        ("gpt-5.2", "xhigh"),
        ("gpt-5-pro", "high"),
    ],
)
def test_openai_reasoning_accepts_each_models_efforts(fake, model, effort):
    f = fake("openai-reasoning")
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    resp = chat(f, {**body, "reasoning_effort": effort})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    assert f.last()["thinking"] is (effort != "none")


def test_openai_reasoning_sampling_only_with_effort_none_on_gpt51(fake):
    f = fake("openai-reasoning")
    base = {"model": "o1", "messages": [{"role": "user", "content": "Hi"}]}
    assert error(chat(f, {**base, "top_p": 0.9}), 400) == openai_err(
        "Unsupported parameter: 'top_p' is not supported with this model.",
        "top_p",
        "unsupported_parameter",
    )
    assert chat(f, {**base, "temperature": 1}).status_code == 200  # the default is fine
    for name, value in [("presence_penalty", 0.5), ("logprobs", True), ("logit_bias", {})]:
        assert error(chat(f, {**base, name: value}), 400)["error"]["param"] == name
    # gpt-5.1 defaults to effort "none", and then takes temperature, top_p and logprobs...
    gpt51 = {**base, "model": "gpt-5.1", "temperature": 0.2, "top_p": 0.9, "logprobs": True}
    assert chat(f, gpt51).status_code == 200
    # ...but not once it reasons, and never the penalties.
    assert error(chat(f, {**gpt51, "reasoning_effort": "low"}), 400)["error"]["param"] == (
        "temperature"
    )
    resp = chat(f, {**base, "model": "gpt-5.1", "presence_penalty": 0.5})
    assert error(resp, 400)["error"]["code"] == "unsupported_parameter"


# --- openai (non-reasoning) ---------------------------------------------------------------------


def test_openai_json_mode_needs_json_in_a_message(fake):
    f = fake("openai")
    body = reference("gpt-4o", response_format={"type": "json_object"})
    assert error(chat(f, body), 400) == openai_err(
        "'messages' must contain the word 'json' in some form, to use 'response_format' of "
        "type 'json_object'.",
        "messages",
    )
    body["messages"][0]["content"] = "Answer in JSON."
    resp = chat(f, body)
    assert resp.status_code == 200
    assert joined(resp) == "Hello!"
    assert chunks(resp)[-1]["usage"]["prompt_tokens"] == 7  # stream_options honoured


def test_openai_refuses_reasoning_effort_on_a_non_reasoning_model(fake):
    f = fake("openai")
    resp = chat(f, reference("gpt-4o", reasoning_effort="medium"))
    assert error(resp, 400) == openai_err(
        "Unrecognized request argument supplied: reasoning_effort"
    )
    resp = chat(f, reference("gpt-4o"))  # max_tokens, temperature, seed: all fine here
    assert resp.status_code == 200
    assert f.last()["thinking"] is False


# --- embeddings ---------------------------------------------------------------------------------


def test_ada_002_refuses_dimensions_even_null(fake):
    f = fake("embeddings-no-dimensions")
    url = f.url + "/embeddings"
    body = {"model": "text-embedding-ada-002", "input": ["a", "b"], "dimensions": 256}
    expected = openai_err("This model does not support specifying dimensions.")
    assert error(httpx.post(url, json=body, headers=BEARER), 400) == expected
    resp = httpx.post(url, json={**body, "dimensions": None}, headers=BEARER)
    assert error(resp, 400) == expected
    del body["dimensions"]
    resp = httpx.post(url, json=body, headers=BEARER)
    assert resp.status_code == 200
    assert len(resp.json()["data"]) == 2
    resp = httpx.post(
        url, json={**body, "model": "text-embedding-3-small", "dimensions": 4}, headers=BEARER
    )
    assert [len(d["embedding"]) for d in resp.json()["data"]] == [4, 4]


# --- mistral ------------------------------------------------------------------------------------


def _extra(loc: list[Any], value: Any) -> dict[str, Any]:
    return {
        "type": "extra_forbidden",
        "loc": loc,
        "msg": "Extra inputs are not permitted",
        "input": value,
    }


def test_mistral_422s_unknown_fields_and_wants_random_seed(fake):
    f = fake("mistral")
    resp = chat(f, reference("mistral-small-latest"))
    assert error(resp, 422) == {
        "object": "error",
        "message": {
            "detail": [
                _extra(["body", "stream_options"], {"include_usage": True}),
                _extra(["body", "seed"], 42),
            ]
        },
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    corrected = reference("mistral-small-latest", stream_options=DROP, seed=DROP, random_seed=42)
    resp = chat(f, corrected)
    assert resp.status_code == 200
    assert joined(resp) == "Hello!"
    # No stream_options, and still the usage: on the last chunk.
    last = chunks(resp)[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"]["total_tokens"] == 9


def test_mistral_refuses_reasoning_content_in_history_and_dimensions(fake):
    f = fake("mistral")
    body = reference("mistral-small-latest", stream_options=DROP, seed=DROP, stream=False)
    body["messages"] += [
        {"role": "assistant", "content": "Hello", "reasoning_content": "hm"},
        {"role": "user", "content": "Again"},
    ]
    resp = chat(f, body)
    detail = error(resp, 422)["message"]["detail"]
    assert detail == [_extra(["body", "messages", 2, "assistant", "reasoning_content"], "hm")]
    url = f.url + "/embeddings"
    embed = {"model": "mistral-embed", "input": ["a"], "dimensions": 8}
    resp = httpx.post(url, json=embed, headers=BEARER)
    assert error(resp, 422)["message"]["detail"] == [_extra(["body", "dimensions"], 8)]
    del embed["dimensions"]
    assert httpx.post(url, json={**embed, "output_dimension": 8}, headers=BEARER).is_success


# --- azure --------------------------------------------------------------------------------------

AZURE_CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def test_azure_classic_wants_deployment_path_api_version_and_api_key(fake):
    f = fake("azure-classic")
    body = reference("gpt-4o")
    # The OpenAI client's request: Bearer on /v1/chat/completions.
    assert error(chat(f, body), 404) == {"error": {"code": "404", "message": "Resource not found"}}
    # Bearer with an API key is taken for an Entra token.
    resp = chat(f, body, path=AZURE_CHAT)
    assert error(resp, 401)["message"].startswith("Unauthorized. Access token is missing")
    resp = chat(f, body, {"api-key": KEY}, path=AZURE_CHAT.split("?", maxsplit=1)[0])
    assert error(resp, 404) == {"error": {"code": "404", "message": "Resource not found"}}
    resp = chat(f, body, {"api-key": "wrong"}, path=AZURE_CHAT)
    assert error(resp, 401)["error"]["message"].startswith("Access denied due to invalid")
    resp = chat(f, body, {}, path=AZURE_CHAT)
    assert error(resp, 401)["message"].startswith("Access denied due to missing subscription")
    resp = chat(f, body, {"api-key": KEY}, path=AZURE_CHAT.replace("gpt-4o", "gpt-9"))
    assert error(resp, 404)["error"]["code"] == "DeploymentNotFound"
    del body["model"]  # the deployment names the model
    resp = chat(f, body, {"api-key": KEY}, path=AZURE_CHAT)
    assert resp.status_code == 200
    assert joined(resp) == "Hello!"
    assert f.last()["query"] == {"api-version": "2024-10-21"}


def test_azure_classic_applies_openais_model_rules(fake):
    f = fake("azure-classic")
    path = AZURE_CHAT.replace("gpt-4o", "o3-mini")
    resp = chat(f, reference("o3-mini"), {"api-key": KEY}, path=path)
    assert error(resp, 400)["error"]["code"] == "unsupported_parameter"
    embed = "/openai/deployments/ada/embeddings?api-version=2024-10-21"
    resp = httpx.post(
        f.root + embed, json={"input": "a", "dimensions": 8}, headers={"api-key": KEY}
    )
    assert error(resp, 400)["error"]["message"].startswith("This model does not support")


def test_azure_v1_takes_bearer_or_api_key_and_the_deployment_as_model(fake):
    f = fake("azure-v1")
    assert f.url.endswith("/openai/v1")
    assert chat(f, reference("gpt-4o")).status_code == 200
    assert chat(f, reference("gpt-4o"), {"api-key": KEY}).status_code == 200
    assert error(chat(f, reference("gpt-4o"), {"api-key": "x"}), 401)["error"]["code"] == "401"
    resp = chat(f, reference("gpt-35"))
    assert error(resp, 404)["error"]["code"] == "DeploymentNotFound"
    resp = chat(f, reference("gpt-4o"), path=AZURE_CHAT)  # the classic path is not here
    assert resp.status_code == 404


# --- lmstudio -----------------------------------------------------------------------------------


def test_lmstudio_refuses_json_object(fake):
    f = fake("lmstudio")
    body = reference("qwen/qwen3-8b", response_format={"type": "json_object"})
    assert error(chat(f, body, {}), 400) == {
        "error": "'response_format.type' must be 'json_schema' or 'text'"
    }
    schema = {"name": "r", "schema": {"type": "object"}}
    for fmt in ({"type": "json_schema", "json_schema": schema}, {"type": "text"}):
        assert chat(f, {**body, "response_format": fmt}, {}).status_code == 200


# --- groq ---------------------------------------------------------------------------------------


def test_groq_qwen3_effort_is_none_or_default_and_thinks_in_split_tags(fake):
    f = fake("groq")
    assert f.url.endswith("/openai/v1")
    resp = chat(f, reference("qwen/qwen3-32b", reasoning_effort="medium"))
    assert error(resp, 400) == {
        "error": {
            "message": "`reasoning_effort` must be one of `none` or `default`",
            "type": "invalid_request_error",
            "param": "reasoning_effort",
        }
    }
    resp = chat(f, reference("qwen/qwen3-32b", reasoning_effort="default"))
    assert resp.status_code == 200
    content = [d.get("content") or "" for d in deltas(resp)]
    assert "".join(content) == "<think>Thinking it over.</think>Hello!"
    assert not any("<think>" in c or "</think>" in c for c in content)  # tags split in chunks
    resp = chat(f, reference("qwen/qwen3-32b", reasoning_effort="none"))
    assert joined(resp) == "Hello!"


def test_groq_reasoning_format(fake):
    f = fake("groq")
    body = reference("qwen/qwen3-32b", reasoning_format="parsed")
    resp = chat(f, body)
    assert joined(resp) == "Hello!"
    assert joined(resp, "reasoning") == "Thinking it over."
    resp = chat(f, {**body, "stream": False})
    message = resp.json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hello!", "reasoning": "Thinking it over."}
    resp = chat(f, {**body, "stream": False, "reasoning_format": "raw"})
    assert resp.json()["choices"][0]["message"]["content"].startswith("<think>Thinking")
    resp = chat(f, {**body, "reasoning_format": "hidden"})
    assert joined(resp) == "Hello!"
    assert not any("reasoning" in d for d in deltas(resp))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    resp = chat(f, {**body, "reasoning_format": "raw", "tools": tools})
    assert error(resp, 400)["error"]["param"] == "reasoning_format"
    resp = chat(f, reference("qwen/qwen3-32b", tools=tools))  # with tools: parsed by default
    assert joined(resp, "reasoning") == "Thinking it over."
    resp = chat(f, reference("llama-3.3-70b-versatile", reasoning_format="parsed"))
    assert error(resp, 400)["error"]["message"] == (
        "`reasoning_format` is not supported with this model"
    )


def test_groq_refuses_logprobs_unknown_properties_and_reasoning_content(fake):
    f = fake("groq")
    base = reference("llama-3.3-70b-versatile")
    assert chat(f, base).status_code == 200  # the reference request passes on a plain model
    resp = chat(f, {**base, "logprobs": True})
    assert error(resp, 400)["error"]["message"] == "`logprobs` is not supported with this model"
    resp = chat(f, {**base, "top_k": 40})
    assert error(resp, 400)["error"]["message"] == (
        "property 'top_k' is unsupported, did you mean 'top_p'?"
    )
    history = [
        *base["messages"],
        {"role": "assistant", "content": "Hello", "reasoning_content": "hm"},
        {"role": "user", "content": "Again"},
    ]
    resp = chat(f, {**base, "messages": history})
    assert "property 'reasoning_content' is unsupported" in error(resp, 400)["error"]["message"]


# --- llama.cpp ----------------------------------------------------------------------------------


def test_llamacpp_is_lenient_and_answers_reasoning_content(fake):
    f = fake("llamacpp")
    resp = chat(f, reference("qwen3-8b", reasoning_effort="medium"), {})
    assert resp.status_code == 200
    assert joined(resp) == "Hello!"
    assert joined(resp, "reasoning_content") == "Thinking it over."
    resp = chat(f, reference("qwen3-8b", stream=False, reasoning_format="none"), {})
    message = resp.json()["choices"][0]["message"]
    assert message["content"] == "<think>Thinking it over.</think>Hello!"
    assert "reasoning_content" not in message
    off = {"enable_thinking": False}
    resp = chat(f, reference("qwen3-8b", chat_template_kwargs=off), {})
    assert joined(resp) == "Hello!"
    assert not any("reasoning_content" in d for d in deltas(resp))
    resp = chat(f, reference("qwen3-8b", top_logprobs=3), {})
    assert error(resp, 400) == {
        "error": {
            "code": 400,
            "message": "top_logprobs requires logprobs to be set to true",
            "type": "invalid_request_error",
        }
    }
    resp = chat(f, reference("qwen3-8b", chat_template_kwargs={"enable_thinking": "no"}), {})
    assert error(resp, 400)["error"]["message"].startswith('invalid type for "enable_thinking"')


def test_llamacpp_raw_puts_think_tags_in_the_content(fake):
    f = fake("llamacpp-raw")
    f.script(Script(chunks=[{"think": "a"}, {"think": "b"}, {"content": "Hi"}]))
    resp = chat(f, reference("qwen3-8b"), {})
    content = [d.get("content") for d in deltas(resp) if d.get("content")]
    assert content == ["<thi", "nk>a", "b", "</thi", "nk>Hi"]
    resp = chat(f, reference("qwen3-8b", reasoning_format="deepseek-legacy", stream=False), {})
    message = resp.json()["choices"][0]["message"]
    assert message["content"] == "<think>Thinking it over.</think>Hello!"
    assert message["reasoning_content"] == "Thinking it over."


# --- anthropic-compat ---------------------------------------------------------------------------


def test_anthropic_ignores_reasoning_effort_and_wants_a_thinking_budget(fake):
    f = fake("anthropic-compat")
    resp = chat(f, reference("claude-sonnet-4-5", reasoning_effort="high"))
    assert resp.status_code == 200
    assert f.last()["thinking"] is False  # accepted, and ignored
    small = {"type": "enabled", "budget_tokens": 512}
    resp = chat(f, reference("claude-sonnet-4-5", thinking=small))
    assert error(resp, 400)["error"]["message"] == (
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    )
    budget = {"type": "enabled", "budget_tokens": 2048}
    resp = chat(f, reference("claude-sonnet-4-5", thinking=budget))  # max_tokens 64
    assert error(resp, 400)["error"]["message"].startswith("`max_tokens` must be greater")
    resp = chat(f, reference("claude-sonnet-4-5", thinking=budget, max_tokens=4096))
    assert error(resp, 400)["error"]["message"].startswith(
        "`temperature` may only be set to 1 when thinking is enabled."
    )
    corrected = reference("claude-sonnet-4-5", thinking=budget, max_tokens=4096, temperature=DROP)
    resp = chat(f, corrected)
    assert resp.status_code == 200
    assert f.last()["thinking"] is True
    # ...and the OpenAI-compatible answer never carries the thought process.
    assert joined(resp) == "Hello!"
    assert not any(k.startswith("reasoning") for d in deltas(resp) for k in d)
    assert error(chat(f, reference("claude-sonnet-4-5", n=2)), 400)


# --- ollama-v1 ----------------------------------------------------------------------------------


def test_ollama_v1_reasoning_effort_and_reasoning_field(fake):
    f = fake("ollama-v1")
    resp = chat(f, reference("llama3.2", reasoning_effort="medium"), {})
    assert error(resp, 400) == openai_err('"llama3.2" does not support thinking')
    assert chat(f, reference("llama3.2", reasoning_effort="none"), {}).status_code == 200
    resp = chat(f, reference("qwen3:8b"), {})  # thinking models think unless told not to
    assert joined(resp, "reasoning") == "Thinking it over."
    assert joined(resp) == "Hello!"
    resp = chat(f, reference("qwen3:8b", reasoning_effort="none", stream=False), {})
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    resp = chat(f, reference("qwen3:8b", reasoning_effort="high", stream=False), {})
    assert resp.json()["choices"][0]["message"]["reasoning"] == "Thinking it over."
    resp = chat(f, reference("qwen3:8b", reasoning_effort="bogus"), {})
    assert error(resp, 400)["error"]["message"].startswith('invalid reasoning value: "bogus"')


# --- gemini -------------------------------------------------------------------------------------

TWO_CALLS = Script(
    chunks=[
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "index": 1,
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                },
            ]
        }
    ],
    finish_reason="tool_calls",
)


def test_gemini_streams_parallel_tool_calls_without_index(fake):
    f = fake("gemini")
    assert f.url.endswith("/v1beta/openai")
    f.script(TWO_CALLS)
    resp = chat(f, reference("gemini-3-flash-preview"))
    calls = [d["tool_calls"] for d in deltas(resp) if "tool_calls" in d]
    assert [len(c) for c in calls] == [1, 1]  # one call per chunk, each whole
    assert all("index" not in c[0] for c in calls)
    assert [c[0]["function"]["arguments"] for c in calls] == [
        '{"city": "Paris"}',
        '{"city": "Rome"}',
    ]
    # Gemini 3 signs the first call of a step only (ai.google.dev thought-signatures)
    assert "thought_signature" in calls[0][0]["extra_content"]["google"]
    assert "extra_content" not in calls[1][0]
    finish = [c["choices"][0]["finish_reason"] for c in chunks(resp) if c["choices"]]
    assert finish[-1] == "stop"  # not "tool_calls"
    f.script(TWO_CALLS)
    resp = chat(f, reference("gemini-2.5-flash", stream=False))
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["id"] for c in choice["message"]["tool_calls"]] == ["call_1", "call_2"]


def test_gemini_reasoning_effort_values_and_unknown_fields(fake):
    f = fake("gemini")
    resp = chat(f, reference("gemini-3-flash-preview", reasoning_effort="minimal"))
    assert error(resp, 400) == [
        {
            "error": {
                "code": 400,
                "message": "Invalid reasoning_effort: minimal. Valid values are: high, low, "
                "medium, none",
                "status": "INVALID_ARGUMENT",
            }
        }
    ]
    resp = chat(f, reference("gemini-3-pro-preview", reasoning_effort="medium"))
    assert "MEDIUM is not supported" in error(resp, 400)[0]["error"]["message"]
    assert chat(f, reference("gemini-2.5-flash", reasoning_effort="medium")).status_code == 200
    budget = {"type": "enabled", "budget_tokens": 2048}
    resp = chat(f, reference("gemini-2.5-flash", thinking=budget))
    assert error(resp, 400)[0]["error"]["message"] == (
        'Invalid JSON payload received. Unknown name "thinking": Cannot find field.'
    )
    google = {"google": {"thinking_config": {"thinking_budget": 1024}}}
    assert chat(f, reference("gemini-2.5-flash", extra_body=google)).status_code == 200


# --- deepseek -----------------------------------------------------------------------------------

CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def _tool_turn(reasoning: str | None) -> list[dict[str, Any]]:
    assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    if reasoning is not None:
        assistant["reasoning_content"] = reasoning
    return [
        {"role": "user", "content": "Weather in Paris?"},
        assistant,
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


def test_deepseek_returns_reasoning_content(fake):
    f = fake("deepseek")
    resp = chat(f, reference("deepseek-reasoner"))
    assert joined(resp, "reasoning_content") == "Thinking it over."
    assert joined(resp) == "Hello!"
    resp = chat(f, reference("deepseek-chat", stream=False))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    resp = chat(f, reference("deepseek-chat", stream=False, thinking={"type": "enabled"}))
    assert resp.json()["choices"][0]["message"]["reasoning_content"] == "Thinking it over."


def test_deepseek_thinking_tool_turns_need_reasoning_content_back(fake):
    f = fake("deepseek")
    body = reference("deepseek-reasoner", messages=_tool_turn(None))
    assert error(chat(f, body), 400) == {
        "error": {
            "message": "Missing `reasoning_content` field in the assistant message at message "
            "index 1. For more information, please refer to "
            "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request_error",
        }
    }
    # Still required in later turns, for that earlier tool-calling exchange.
    later = [*_tool_turn(None), {"role": "assistant", "content": "Sunny."}]
    later.append({"role": "user", "content": "Thanks"})
    assert chat(f, reference("deepseek-reasoner", messages=later)).status_code == 400
    assert chat(f, reference("deepseek-reasoner", messages=_tool_turn("Look it up."))).is_success
    # Outside thinking mode the field is not needed.
    assert chat(f, reference("deepseek-chat", messages=_tool_turn(None))).status_code == 200
    resp = chat(f, reference("deepseek-reasoner", logprobs=True))
    assert error(resp, 400)["error"]["code"] == "invalid_request_error"


# --- strict-unknown -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "strict-unknown",
            openai_err(
                "Unknown parameter: 'parallel_tool_calls'.",
                "parallel_tool_calls",
                "unknown_parameter",
            ),
        ),
        (
            "strict-unknown-legacy",
            openai_err("Unrecognized request argument supplied: parallel_tool_calls"),
        ),
        (
            "strict-unknown-vllm",
            {
                "object": "error",
                "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'parallel_tool_calls'), "
                "'msg': 'Extra inputs are not permitted', 'input': False}]",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
        ),
        (
            "strict-unknown-litellm",
            {
                "error": {
                    "message": "litellm.UnsupportedParamsError: openai does not support "
                    "parameters: ['parallel_tool_calls'], for model=gpt-4o-mini. To drop these, "
                    "set `litellm.drop_params=True` or for proxy:\n\n`litellm_settings:\n "
                    "drop_params: true`\n. \n If you want to use these params dynamically send "
                    "allowed_openai_params=['parallel_tool_calls'] in your request.\n\nLiteLLM: "
                    "model group 'gpt-4o-mini' failed with the error above. No fallback was "
                    "attempted.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "400",
                }
            },
        ),
    ],
)
def test_strict_unknown_refuses_a_parameter_no_profile_lists(fake, name, expected):
    f = fake(name)
    body = reference("gpt-4o-mini", parallel_tool_calls=False)
    assert error(chat(f, body), 400) == expected
    del body["parallel_tool_calls"]
    assert chat(f, body).status_code == 200


# --- every rule set -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RULE_SETS))
def test_every_rule_set_answers_a_plain_request_and_keeps_fake_upstream_machinery(fake, name):
    f = fake(name)
    model = f.ruleset.models[0]
    headers = BEARER
    path = ""
    if name == "azure-classic":
        headers = {"api-key": KEY}
        path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        model = "gpt-4o"
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    # A fault still comes first, as in FakeUpstream.
    f.faults.append((lambda _path, _body: True, Script(status=503, error={"error": "busy"})))
    assert chat(f, body, headers, path).status_code == 503
    f.faults.clear()
    f.script(Script(chunks=[{"content": "Bonjour"}], split_at=7))  # written in 7-byte pieces
    resp = chat(f, body, headers, path)
    assert resp.status_code == 200, resp.text
    assert joined(resp).endswith("Bonjour")
    assert f.last()["body"]["model"] == model
    assert f.targets[-1] == (path or f.ruleset.base_path + "/chat/completions")


# --- openrouter ---------------------------------------------------------------------------------


def _openrouter_err(message: str, **metadata: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "code": 400}
    if metadata:
        error["metadata"] = metadata
    return {"error": error}


def test_openrouter_refuses_to_switch_off_mandatory_reasoning(fake):
    f = fake("openrouter")
    assert f.url.endswith("/api/v1")
    expected = _openrouter_err(
        "Reasoning is mandatory for this endpoint and cannot be disabled.", provider_name=None
    )
    for off in ({"enabled": False}, {"effort": "none"}):
        resp = chat(f, reference("deepseek/deepseek-r1", reasoning=off))
        assert error(resp, 400) == expected
    # Asking for an effort is fine, as is saying nothing; the model reasons either way.
    for body in (
        reference("deepseek/deepseek-r1", reasoning={"effort": "low"}),
        reference("deepseek/deepseek-r1"),
    ):
        resp = chat(f, body)
        assert joined(resp, "reasoning") == "Thinking it over."
        assert joined(resp) == "Hello!"
    # A model whose reasoning is optional switches it off.
    resp = chat(f, reference("qwen/qwen3-14b", reasoning={"enabled": False}, stream=False))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    assert f.last()["thinking"] is False


def test_openrouter_reasoning_object_rules(fake):
    f = fake("openrouter")
    both = {"effort": "high", "max_tokens": 2000}
    resp = chat(f, reference("qwen/qwen3-14b", reasoning=both))
    assert error(resp, 400) == _openrouter_err(
        'Only one of "reasoning.effort" and "reasoning.max_tokens" can be specified'
    )
    resp = chat(f, reference("qwen/qwen3-14b", reasoning={"effort": "high", "exclude": True}))
    assert f.last()["thinking"] is True  # it reasons, and does not show it
    assert joined(resp) == "Hello!"
    assert not any("reasoning" in d for d in deltas(resp))
    # Parameters a model does not take are ignored: reasoning on gpt-4o-mini, top_k, anything.
    body = reference("openai/gpt-4o-mini", reasoning={"effort": "high"}, top_k=40, transforms=[])
    resp = chat(f, body)
    assert joined(resp) == "Hello!"
    assert f.last()["thinking"] is False
    resp = chat(f, reference("openai/gpt-5-turbo"))
    assert error(resp, 400)["error"]["message"] == "openai/gpt-5-turbo is not a valid model ID"


def test_openrouter_streams_usage_and_keepalive_comments_without_being_asked(fake):
    f = fake("openrouter")
    resp = chat(f, reference("openai/gpt-4o-mini", stream_options=DROP))
    assert resp.text.startswith(": OPENROUTER PROCESSING\n\n")
    last = chunks(resp)[-1]
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == 9
    # The model list says which models reason, and which cannot stop.
    listed = httpx.get(f.url + "/models", headers=BEARER).json()["data"]
    entries = {m["id"]: m for m in listed}
    assert "reasoning" in entries["qwen/qwen3-14b"]["supported_parameters"]
    assert entries["deepseek/deepseek-r1"]["reasoning"] == {"mandatory": True}
    assert "reasoning" not in entries["openai/gpt-4o-mini"]["supported_parameters"]


# --- together -----------------------------------------------------------------------------------


def test_together_takes_samplers_and_low_medium_high_efforts(fake):
    f = fake("together")
    body = reference(
        "openai/gpt-oss-20b", top_k=40, min_p=0.05, repetition_penalty=1.1, reasoning_effort="low"
    )
    resp = chat(f, body)
    assert joined(resp, "reasoning") == "Thinking it over."
    assert joined(resp) == "Hello!"
    for effort in ("none", "minimal", "xhigh"):
        resp = chat(f, {**body, "reasoning_effort": effort})
        assert error(resp, 400)["error"]["param"] == "reasoning_effort"


def test_together_hybrid_models_switch_reasoning_with_the_reasoning_object(fake):
    f = fake("together")
    resp = chat(f, reference("Qwen/Qwen3.5-9B", stream=False))
    assert resp.json()["choices"][0]["message"]["reasoning"] == "Thinking it over."
    resp = chat(f, reference("Qwen/Qwen3.5-9B", stream=False, reasoning={"enabled": False}))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    # Reasoning-only models cannot be switched off; the plain ones never reason.
    resp = chat(f, reference("deepseek-ai/DeepSeek-R1", reasoning={"enabled": False}))
    assert joined(resp, "reasoning") == "Thinking it over."
    resp = chat(f, reference("meta-llama/Llama-3.3-70B-Instruct-Turbo"))
    assert not any("reasoning" in d for d in deltas(resp))


# --- fireworks ----------------------------------------------------------------------------------

FW_QWEN3 = "accounts/fireworks/models/qwen3-235b-a22b"
FW_R1 = "accounts/fireworks/models/deepseek-r1-0528"
FW_LLAMA = "accounts/fireworks/models/llama-v3p3-70b-instruct"


def _fireworks_err(message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "param": param, "code": "BAD_REQUEST", "type": "error"}}


def test_fireworks_refuses_fields_it_does_not_know(fake):
    f = fake("fireworks")
    assert f.url.endswith("/inference/v1")
    # The reference request passes (stream_options included), with Fireworks' own samplers.
    resp = chat(f, reference(FW_LLAMA, top_k=40, min_p=0.05, repetition_penalty=1.1))
    assert joined(resp) == "Hello!"
    assert chunks(resp)[-1]["usage"]["total_tokens"] == 9
    off = {"enable_thinking": False}
    resp = chat(f, reference(FW_QWEN3, chat_template_kwargs=off))
    assert error(resp, 400) == _fireworks_err(
        "Extra inputs are not permitted, field: 'chat_template_kwargs', value: "
        "{'enable_thinking': False}."
    )
    history = [
        *reference(FW_LLAMA)["messages"],
        {"role": "assistant", "content": "Hello", "reasoning": "hm"},
        {"role": "user", "content": "Again"},
    ]
    resp = chat(f, reference(FW_LLAMA, messages=history))
    assert error(resp, 400)["error"]["message"] == (
        "Extra inputs are not permitted, field: 'messages[2].reasoning', value: 'hm'."
    )
    history[2] = {"role": "assistant", "content": "Hello", "reasoning_content": "hm"}
    assert chat(f, reference(FW_LLAMA, messages=history)).status_code == 200


def test_fireworks_wants_a_stream_for_more_than_4096_tokens(fake):
    f = fake("fireworks")
    resp = chat(f, reference(FW_LLAMA, stream=False, stream_options=DROP, max_tokens=8192))
    assert error(resp, 400) == _fireworks_err(
        "Requests with max_tokens > 4096 must have stream=true", "max_tokens"
    )
    assert chat(f, reference(FW_LLAMA, max_tokens=8192)).status_code == 200  # streamed
    body = reference(FW_LLAMA, stream=False, stream_options=DROP, max_tokens=4096)
    assert chat(f, body).status_code == 200
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    resp = chat(f, {**body, "tools": tools, "response_format": {"type": "json_object"}})
    assert error(resp, 400)["error"]["message"] == (
        "You cannot specify response format and function call at the same time"
    )


def test_fireworks_reasoning_effort_and_where_reasoning_shows(fake):
    f = fake("fireworks")
    resp = chat(f, reference(FW_QWEN3, reasoning_effort="medium", stream=False))
    message = resp.json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Thinking it over."
    assert message["content"] == "Hello!"
    resp = chat(f, reference(FW_QWEN3, reasoning_effort="none", stream=False))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    resp = chat(f, reference(FW_R1, stream=False))  # this one answers in tags
    assert resp.json()["choices"][0]["message"]["content"] == (
        "<think>Thinking it over.</think>Hello!"
    )
    resp = chat(f, reference(FW_QWEN3, reasoning_effort="extreme"))
    assert error(resp, 400)["error"]["param"] == "reasoning_effort"


# --- vllm ---------------------------------------------------------------------------------------

QWEN3 = "Qwen/Qwen3-8B"
LLAMA31 = "meta-llama/Llama-3.1-8B-Instruct"


def test_vllm_refuses_stream_options_without_a_stream(fake):
    f = fake("vllm")
    body = reference(QWEN3, stream=False)  # stream_options left in
    err = error(chat(f, body), 400)["error"]
    assert err["type"] == "Bad Request"
    assert err["code"] == 400
    assert err["param"] == "stream_options"
    assert err["message"].startswith("1 validation error:\n")
    assert "Stream options can only be defined when `stream=True`." in err["message"]
    resp = chat(f, reference(QWEN3, stream=False, stream_options=DROP))
    assert resp.status_code == 200
    # Its key is checked like OpenAI's, but answered in its own words.
    resp = chat(f, reference(QWEN3), {"Authorization": "Bearer wrong"})
    assert error(resp, 401) == {"error": "Unauthorized"}


def test_vllm_takes_samplers_and_unknown_fields_but_checks_values(fake):
    f = fake("vllm")
    body = reference(LLAMA31, top_k=40, min_p=0.05, repetition_penalty=1.1, made_up_field=1)
    assert chat(f, body).status_code == 200  # unknown fields: a warning in its log only
    err = error(chat(f, {**body, "top_logprobs": 3}), 400)["error"]
    assert err["param"] == "top_logprobs"
    assert chat(f, {**body, "top_logprobs": 3, "logprobs": True}).status_code == 200
    err = error(chat(f, {**body, "reasoning_effort": "maximum"}), 400)["error"]
    assert err["param"] == "body.reasoning_effort"
    assert "literal_error" in err["message"]
    err = error(chat(f, {**body, "tools": []}), 400)["error"]
    assert err["param"] == "tools"
    err = error(chat(f, {**body, "tool_choice": "required"}), 400)["error"]
    assert err["param"] == "tool_choice"


def test_vllm_reasoning_parser_field_and_enable_thinking(fake):
    f = fake("vllm")
    resp = chat(f, reference(QWEN3))
    assert joined(resp, "reasoning") == "Thinking it over."  # not reasoning_content any more
    assert joined(resp) == "Hello!"
    off = {"enable_thinking": False}
    resp = chat(f, reference(QWEN3, chat_template_kwargs=off, stream=False, stream_options=DROP))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    resp = chat(f, reference(QWEN3, reasoning_effort="none"))  # sets enable_thinking false
    assert not any("reasoning" in d for d in deltas(resp))
    resp = chat(f, reference(QWEN3, include_reasoning=False))
    assert f.last()["thinking"] is True
    assert not any("reasoning" in d for d in deltas(resp))
    # A DeepSeek-R1 distill thinks whatever its template is told.
    resp = chat(f, reference("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", chat_template_kwargs=off))
    assert joined(resp, "reasoning") == "Thinking it over."


def test_vllm_raw_leaves_think_tags_in_the_content(fake):
    f = fake("vllm-raw")
    resp = chat(f, reference(QWEN3))
    assert joined(resp) == "<think>Thinking it over.</think>Hello!"
    off = {"enable_thinking": False}
    resp = chat(f, reference(QWEN3, chat_template_kwargs=off))
    assert joined(resp) == "Hello!"


# --- sglang -------------------------------------------------------------------------------------


def test_sglang_reasoning_content_and_its_switches(fake):
    f = fake("sglang")
    body = reference(QWEN3, top_k=40, min_p=0.05, repetition_penalty=1.1, made_up_field=1)
    resp = chat(f, body)  # samplers and unknown fields accepted
    assert joined(resp, "reasoning_content") == "Thinking it over."
    assert joined(resp) == "Hello!"
    resp = chat(f, reference(QWEN3, stream=False, reasoning_effort="none"))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    off = {"enable_thinking": False}
    resp = chat(f, reference(QWEN3, stream=False, chat_template_kwargs=off))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    resp = chat(f, reference(QWEN3, stream=False, separate_reasoning=False))
    assert resp.json()["choices"][0]["message"]["content"].startswith("<think>Thinking")
    # stream_options without a stream is no error here (unlike vLLM).
    assert chat(f, reference(QWEN3, stream=False)).status_code == 200
    resp = chat(f, reference("meta-llama/Llama-3.1-8B-Instruct"))
    assert not any("reasoning_content" in d for d in deltas(resp))


def test_sglang_refuses_in_its_flat_error_object(fake):
    f = fake("sglang")
    resp = chat(f, reference(QWEN3, tool_choice="required"))
    assert error(resp, 400) == {
        "object": "error",
        "message": "Tools cannot be empty if tool choice is set to required.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    resp = chat(f, reference(QWEN3, reasoning_effort=True))
    err = error(resp, 400)
    assert err["type"] == "Bad Request"
    assert "reasoning_effort" in err["message"]
    assert chat(f, reference(QWEN3, reasoning_effort=0.5)).status_code == 200
    bad = {"type": "json_schema", "json_schema": {"name": "r"}}
    resp = chat(f, reference(QWEN3, response_format=bad))
    assert error(resp, 400)["message"] == (
        "schema_ is required for json_schema response format request."
    )


def test_sglang_raw_leaves_think_tags_in_the_content(fake):
    f = fake("sglang-raw")
    resp = chat(f, reference(QWEN3, stream=False))
    assert resp.json()["choices"][0]["message"]["content"] == (
        "<think>Thinking it over.</think>Hello!"
    )


# --- tgi ----------------------------------------------------------------------------------------


def test_tgi_refuses_openais_json_mode_and_wants_a_grammar_value(fake):
    f = fake("tgi")
    body = reference(QWEN3, response_format={"type": "json_object"})
    resp = chat(f, body)
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.text.startswith(
        "Failed to deserialize the JSON body into the target type: response_format: missing "
        "field `value` at line 1 column "
    )
    schema = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}
    resp = chat(f, {**body, "response_format": schema})  # OpenAI's json_schema: no value either
    assert "missing field `value`" in resp.text
    resp = chat(f, {**body, "response_format": {"type": "text"}})
    assert resp.text.startswith(
        "Failed to deserialize the JSON body into the target type: response_format: unknown "
        "variant `text`"
    )
    bare = {"type": "json", "value": {"type": "object"}}
    resp = chat(f, {**body, "response_format": bare})
    assert error(resp, 422) == {
        "error": "Input validation error: grammar is not valid: Grammar must have a 'properties' "
        "field",
        "error_type": "validation",
    }
    grammar = {"type": "json", "value": {"type": "object", "properties": {"a": {"type": "string"}}}}
    assert chat(f, {**body, "response_format": grammar}).status_code == 200
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    resp = chat(f, {**body, "response_format": grammar, "tools": tools})
    assert error(resp, 422) == {
        "error": "Tool error: Grammar and tools are mutually exclusive",
        "error_type": "tool_error",
    }


def test_tgi_checks_sampling_values_and_ignores_unknown_fields(fake):
    f = fake("tgi")
    body = reference(LLAMA31, reasoning_effort="high", chat_template_kwargs={}, top_k=40)
    assert chat(f, body).status_code == 200  # fields it does not declare are ignored
    assert chat(f, reference(LLAMA31, temperature=0)).status_code == 200  # greedy
    assert error(chat(f, reference(LLAMA31, top_p=1.0)), 422) == {
        "error": "Input validation error: `top_p` must be > 0.0 and < 1.0",
        "error_type": "validation",
    }
    assert chat(f, reference(LLAMA31, top_p=0.99)).status_code == 200
    resp = chat(f, reference(LLAMA31, presence_penalty=-2.0))
    assert "`repetition_penalty` must be strictly positive" in error(resp, 422)["error"]
    resp = chat(f, reference(LLAMA31, logprobs=True, top_logprobs=10))
    assert error(resp, 422)["error"].endswith("`top_n_tokens` must be >= 0 and <= 5. Given: 10")
    resp = chat(f, reference(LLAMA31, stop="END"))
    assert resp.status_code == 422
    assert 'stop: invalid type: string "END", expected a sequence' in resp.text
    assert chat(f, reference(LLAMA31, stop=["END"])).status_code == 200


def test_tgi_answers_with_think_tags_and_cannot_be_told_not_to_think(fake):
    f = fake("tgi")
    off = {"enable_thinking": False}
    resp = chat(f, reference(QWEN3, chat_template_kwargs=off, reasoning_effort="none"))
    assert joined(resp) == "<think>Thinking it over.</think>Hello!"
    resp = chat(f, reference(LLAMA31, stream=False))
    assert resp.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
