"""Settings of what a request may hold and how it is translated: the body's size and the
counts in it (limits.py), the model mapping file, the options passed through, thinking and
output-token limits (policy.py), and the key that signs generate's ``context``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from ollama_openai_bridge.config.model_mapping import load_model_map
from ollama_openai_bridge.config.parsing import ByteSize, ExistingFile, split_list
from ollama_openai_bridge.limits import Limits
from ollama_openai_bridge.model_map import ModelMap
from ollama_openai_bridge.policy import Policy


class RequestSettings(BaseModel):
    """Request limits and the translation's settings: a part of
    :class:`~ollama_openai_bridge.config.Settings`, which reads them from the environment."""

    # Validated only within Settings (settings.py). model_mapping_file: pydantic before 2.10
    # reserves every model_ name by default (pyproject allows 2.7), BaseSettings only its own.
    model_config = ConfigDict(
        defer_build=True, protected_namespaces=("model_validate", "model_dump")
    )

    model_mapping_file: ExistingFile = Field(
        None,
        description="JSON file: alias -> upstream id, or alias -> {model, context_length, "
        "capabilities, think_style, max_output_tokens}.",
    )
    request_max_size: ByteSize = Field(
        64 * 1024 * 1024, gt=0, description="Largest accepted request body (bytes, or 64MB/64MiB)."
    )
    passthrough_options: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated Ollama options forwarded as-is, "
        "optionally renamed: 'top_k,min_p,repeat_penalty=repetition_penalty'.",
    )
    default_context_length: int = Field(
        32768, ge=256, description="Context length /api/show reports for unknown models."
    )
    think_style: Literal[
        "auto",
        "reasoning_effort",
        "openrouter",
        "chat_template_kwargs",
        "thinking",
        "groq",
        "none",
    ] = Field(
        "auto",
        description="How 'think' reaches the backend: auto (as its backend profile says), "
        "reasoning_effort (OpenAI), openrouter (reasoning object), chat_template_kwargs "
        "(vLLM/SGLang enable_thinking), thinking (Anthropic), groq (reasoning_format), none.",
    )
    max_output_tokens: int = Field(
        0,
        ge=0,
        description="The most output tokens a request may ask for (num_predict, max_tokens, "
        "max_output_tokens): more is lowered to it, for models whose limit neither the "
        "backend's model list nor MODEL_MAPPING_FILE gives; 0 = no limit.",
    )
    completions_max_tokens: int = Field(
        2048,
        ge=1,
        description="max_tokens for /v1/completions (generate with suffix or raw) "
        "when the client sets no num_predict; those endpoints default to 16.",
    )
    embed_max_inputs: int = Field(
        2048,
        ge=1,
        description="Most inputs in one /api/embed or /v1/embeddings request (OpenAI's limit).",
    )
    request_max_values: int = Field(
        500_000,
        ge=1000,
        description="Most commas (JSON values, or commas in text) in a body the proxy parses; "
        "checked before parsing, which costs memory per value.",
    )
    request_max_messages: int = Field(
        100_000, ge=1, description="Most messages in one chat request."
    )
    request_max_images: int = Field(
        3000, ge=1, description="Most images in one request, all messages together."
    )
    request_max_tools: int = Field(
        1024, ge=1, description="Most tools in one request, and tool calls in one message."
    )
    request_max_stop: int = Field(256, ge=1, description="Most stop sequences in one request.")
    request_max_context: int = Field(
        262_144,
        ge=1,
        description="Most integers in a generate request's 'context', and in the context an "
        "answer returns.",
    )
    context_signing_key: SecretStr = Field(
        SecretStr(""),
        description="Secret that signs generate's 'context' (HMAC-SHA256), at least 32 "
        "characters; unset = a random key per start of the proxy, so contexts do not survive "
        "a restart nor move between instances.",
    )

    @field_validator("context_signing_key")
    @classmethod
    def _signing_key(cls, v: SecretStr) -> SecretStr:
        key = v.get_secret_value()
        if key and len(key) < 32:
            raise ValueError(
                "must be at least 32 characters (e.g. the output of `openssl rand -hex 32`), "
                "or unset for a random key per start"
            )
        return v

    @field_validator("passthrough_options", mode="before")
    @classmethod
    def _passthrough(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for item in split_list(v):
            name, _, target = item.partition("=")
            out[name.strip()] = target.strip() or name.strip()
        return out

    def limits(self) -> Limits:
        """The request limits in force (REQUEST_MAX_* and EMBED_MAX_INPUTS)."""
        return Limits(
            values=self.request_max_values,
            messages=self.request_max_messages,
            images=self.request_max_images,
            tools=self.request_max_tools,
            stop=self.request_max_stop,
            context=self.request_max_context,
            embed_inputs=self.embed_max_inputs,
        )

    def policy(self) -> Policy:
        """What the operator tunes in the translation: PASSTHROUGH_OPTIONS,
        COMPLETIONS_MAX_TOKENS, and MAX_OUTPUT_TOKENS (None for 0, no limit)."""
        return Policy(
            passthrough=self.passthrough_options,
            completions_max_tokens=self.completions_max_tokens,
            max_output_tokens=self.max_output_tokens or None,
        )

    def model_map(self) -> ModelMap:
        """MODEL_MAPPING_FILE, read anew on each call (an empty map when unset). Raises
        ConfigError for a file that is not a valid mapping (model_mapping.load_model_map)."""
        return load_model_map(self.model_mapping_file) if self.model_mapping_file else ModelMap()
