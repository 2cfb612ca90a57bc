"""Model names and metadata: ``/v1/models`` -> ``/api/tags``, ``/api/show``, ``/api/ps``.

OpenAI backends publish only ids; Ollama clients want sizes, digests, details, a context length
and capabilities. We synthesise them: from what the backend publishes, else the operator's model
map, else a table of well-known model families, else defaults.

Capabilities, as Ollama spells them (types/model/capability.go), say what the proxy can do with
the model: ``completion`` for every model that is not an embedding model; ``tools``, ``vision``
and ``thinking`` as the backend's model entry says (OpenRouter's ``supported_parameters`` and
``architecture``), else the operator's map, else the model family (:data:`_RULES`);
``embedding`` for embedding models (by name); ``insert`` (``suffix``, fill-in-the-middle) for
completion models on a backend whose ``/v1/completions`` takes ``suffix`` (the profile's
``fim``), since that is where the proxy sends it. ``/api/show``'s template is written so that
Ollama's own rules read the same capabilities out of it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from ollama_openai_bridge.model_map import ModelMap, ModelMeta, positive_int
from ollama_openai_bridge.translate.ndjson import rfc3339

# --- synthesised metadata -------------------------------------------------------------------

_FAMILY = re.compile(r"[a-z]+")

# (pattern, context length, extra capabilities). First context-length match wins; capabilities
# accumulate. Figures are the providers' published context windows.
_RULES: tuple[tuple[re.Pattern[str], int | None, tuple[str, ...]], ...] = tuple(
    (re.compile(p, re.IGNORECASE), ctx, caps)
    for p, ctx, caps in (
        (r"gpt-4\.1", 1047576, ("vision",)),
        (r"gpt-5", 400000, ("vision", "thinking")),
        (r"gpt-oss", 131072, ("thinking",)),
        (r"(^|/)o[134](-|$)", 200000, ("vision", "thinking")),
        (r"gpt-4o|gpt-4-turbo|chatgpt-4o", 128000, ("vision",)),
        (r"gpt-3\.5", 16385, ()),
        (r"claude-(3-7|sonnet-4|opus-4|haiku-4)|claude-[a-z]+-4", 200000, ("vision", "thinking")),
        (r"claude", 200000, ("vision",)),
        (r"gemini-(2\.5|3)", 1048576, ("vision", "thinking")),
        (r"gemini", 1048576, ("vision",)),
        (r"deepseek-r1|qwq|magistral|thinking|reason", None, ("thinking",)),
        (r"qwen3", 40960, ("thinking",)),
        (r"qwen", 32768, ()),
        (r"llama-?4", 131072, ("vision",)),
        (r"llama-?3\.[1-9]|llama3\.[1-9]", 131072, ()),
        (r"mistral|mixtral|codestral|pixtral", 32768, ()),
        (r"deepseek", 65536, ()),
        (r"vision|llava|-vl\b|-vl-|gemma-?3", None, ("vision",)),
    )
)
_EMBEDDING = re.compile(r"embed|bge-|(^|/)e5-|minilm|gte-|nomic-embed|mxbai", re.IGNORECASE)
# The vector sizes of well-known embedding models (their model cards and API references), for
# details.embedding_length and <arch>.embedding_length. First match wins.
_EMBEDDING_LENGTHS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(p, re.IGNORECASE), n)
    for p, n in (
        (r"text-embedding-3-large|gemini-embedding", 3072),
        (r"text-embedding-3-small|text-embedding-ada-002", 1536),
        (r"nomic-embed-text|text-embedding-004|bge-base|(^|/)e5-base|gte-base", 768),
        (r"mxbai-embed-large|bge-m3|bge-large|e5-large|gte-large|mistral-embed", 1024),
        (r"minilm|bge-small|(^|/)e5-small|gte-small", 384),
    )
)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    family: str
    context_length: int
    capabilities: tuple[str, ...]
    embedding_length: int | None = None  # an embedding model's vector size, when known


@lru_cache(maxsize=1024)
def _guess(model_id: str, default_context: int) -> ModelFacts:
    base = model_id.rsplit("/", 1)[-1].lower()
    m = _FAMILY.search(base)
    family = m.group(0) if m else "unknown"
    if _EMBEDDING.search(model_id):
        length = next((n for p, n in _EMBEDDING_LENGTHS if p.search(model_id)), None)
        return ModelFacts(family, 8192, ("embedding",), length)
    context: int | None = None
    caps = ["completion", "tools"]
    for pattern, ctx, extra in _RULES:
        if pattern.search(model_id):
            if context is None and ctx is not None:
                context = ctx
            caps.extend(c for c in extra if c not in caps)
    return ModelFacts(family, context or default_context, tuple(caps))


def published(entry: Mapping[str, Any] | None) -> tuple[int | None, tuple[str, ...] | None]:
    """The context length and capabilities a backend publishes in its ``/v1/models`` entry:
    OpenRouter's ``context_length`` (or its ``top_provider``'s), ``supported_parameters`` and
    ``architecture``; vLLM's ``max_model_len``; LM Studio's ``max_context_length``; llama.cpp's
    ``meta.n_ctx`` (or ``n_ctx_train``); Together's ``context_length``; Groq's
    ``context_window``. (None, None) for
    backends that publish only ids, like OpenAI."""
    if not entry:
        return None, None
    provider = entry.get("top_provider")
    meta = entry.get("meta")
    context = (
        positive_int(entry.get("context_length"))
        or positive_int(entry.get("max_model_len"))
        or positive_int(entry.get("max_context_length"))
        or positive_int(entry.get("context_window"))  # Groq (console.groq.com/docs/models)
        or (positive_int(provider.get("context_length")) if isinstance(provider, dict) else None)
        or (
            positive_int(meta.get("n_ctx")) or positive_int(meta.get("n_ctx_train"))
            if isinstance(meta, dict)
            else None
        )
    )
    params = entry.get("supported_parameters")
    if not isinstance(params, list):
        return context, None
    caps = ["completion"]
    if "tools" in params:
        caps.append("tools")
    arch = entry.get("architecture")
    modalities = arch.get("input_modalities") if isinstance(arch, dict) else None
    if isinstance(modalities, list) and "image" in modalities:
        caps.append("vision")
    if "reasoning" in params or "include_reasoning" in params:
        caps.append("thinking")
    return context, tuple(caps)


def facts(
    name: str,
    upstream_id: str,
    meta: ModelMeta | None,
    default_context: int,
    entry: Mapping[str, Any] | None = None,
    *,
    insert: bool = False,
) -> ModelFacts:
    """What /api/tags and /api/show report: what the backend publishes, else the operator's
    map, else what the model's family is known for, else defaults. ``insert``: the backend takes
    ``suffix`` on ``/v1/completions`` (the profile's ``fim``), so a completion model gets the
    ``insert`` capability -- unless the operator's map lists the capabilities itself."""
    guess = _guess(upstream_id, default_context)
    context, caps = published(entry)
    listed = meta.capabilities if meta else None
    if meta is None and context is None and caps is None:
        found = guess
    else:
        found = ModelFacts(
            guess.family,
            context or (meta.context_length if meta else None) or guess.context_length,
            caps or listed or guess.capabilities,
            guess.embedding_length,
        )
    if not insert or listed or "completion" not in found.capabilities:
        return found
    return replace(found, capabilities=with_insert(found.capabilities))


def with_insert(caps: tuple[str, ...]) -> tuple[str, ...]:
    """``caps`` with ``insert`` where Ollama puts it: after ``tools`` (template capabilities
    follow ``completion``), before ``vision`` and ``thinking`` (server/images.go)."""
    if "insert" in caps:
        return caps
    at = caps.index("tools") + 1 if "tools" in caps else caps.index("completion") + 1
    return (*caps[:at], "insert", *caps[at:])


def digest(name: str) -> str:
    # 64 hex chars without the "sha256:" prefix, as /api/tags shows them; stable per name.
    return hashlib.sha256(name.encode()).hexdigest()


def details(family: str = "", f: ModelFacts | None = None) -> dict[str, Any]:
    """Ollama's ``details`` (api/types.go ModelDetails); with ``f``, the context and embedding
    lengths Ollama 0.30.0 added to ``/api/tags`` (omitted when unknown, as its omitempty)."""
    out: dict[str, Any] = {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": "",
        "quantization_level": "",
    }
    if f is not None:
        out["context_length"] = f.context_length
        if f.embedding_length:
            out["embedding_length"] = f.embedding_length
    return out


def tag_entry(
    name: str, created: Any, fallback_ns: int, f: ModelFacts | None = None
) -> dict[str, Any]:
    """One ``/api/tags`` entry; with ``f``, its ``details`` lengths and ``capabilities``
    (Ollama 0.30.0: api/types.go ListModelResponse)."""
    modified_ns = (
        created * 1_000_000_000 if isinstance(created, int) and created > 0 else fallback_ns
    )
    out: dict[str, Any] = {
        "name": name,
        "model": name,
        "modified_at": rfc3339(modified_ns),
        "size": 0,
        "digest": digest(name),
        # family "" as before (contract §4.5): /api/show has the guessed one
        "details": details("", f),
    }
    if f is not None:
        out["capabilities"] = list(f.capabilities)
    return out


def tags(
    upstream: Mapping[str, Any],
    model_map: ModelMap,
    now_ns: int,
    facts_of: Callable[[str], ModelFacts] | None = None,
) -> dict[str, Any]:
    """An OpenAI ``/v1/models`` body -> an Ollama ``/api/tags`` body; ``facts_of(name)``: what
    is known of each listed name (its details' lengths and capabilities).

    Mapped ids are listed under their aliases; aliases whose target the backend does not list are
    listed too (the operator configured them; many backends list only part of what they serve).
    """
    data = upstream.get("data") if isinstance(upstream, Mapping) else None
    models: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in data if isinstance(data, list) else ():
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        upstream_id = item["id"]
        for name in model_map.aliases_of(upstream_id) or (upstream_id,):
            if name not in seen:
                seen.add(name)
                f = facts_of(name) if facts_of else None
                models.append(tag_entry(name, item.get("created"), now_ns, f))
    for alias in model_map.entries:
        if alias not in seen:
            seen.add(alias)
            models.append(tag_entry(alias, None, now_ns, facts_of(alias) if facts_of else None))
    return {"models": models}


def openai_models(upstream: Mapping[str, Any], model_map: ModelMap) -> dict[str, Any]:
    """``/v1/models`` with aliases applied, in OpenAI's shape."""
    data = upstream.get("data") if isinstance(upstream, Mapping) else None
    out: list[Any] = []
    seen: set[str] = set()
    for item in data if isinstance(data, list) else ():
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        for name in model_map.aliases_of(item["id"]) or (item["id"],):
            if name not in seen:
                seen.add(name)
                out.append({**item, "id": name})
    for alias in model_map.entries:
        if alias not in seen:
            seen.add(alias)
            out.append({"id": alias, "object": "model", "created": 0, "owned_by": "proxy"})
    return {"object": "list", "data": out}


def template(caps: Sequence[str]) -> str:
    """A Go template (Ollama's ``TEMPLATE``) of what the proxy does with a request for a model
    of ``caps``: the backend applies the model's real template; this one shows which request
    fields reach it. Ollama's own rules read the same capabilities out of it (server/images.go
    goTemplateCapabilities: a ``.Tools`` variable is tools, ``.Suffix`` is insert, a
    ``.Thinking`` between tags inside the messages is thinking), and so do clients: Continue
    turns fill-in-the-middle on only when the template has ``.Suffix`` (core/llm/llms/Ollama.ts).
    An embedding model's is Ollama's ``{{ .Prompt }}``."""
    if "completion" not in caps:
        return "{{ .Prompt }}"
    chat = "{{- if .System }}system: {{ .System }}\n{{ end }}"
    if "tools" in caps:
        chat += "{{- if .Tools }}tools: {{ range .Tools }}{{ .Function.Name }} {{ end }}\n{{ end }}"
    chat += "{{- range .Messages }}{{ .Role }}: "
    if "thinking" in caps:
        chat += "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    if "vision" in caps:
        chat += "{{ range .Images }}[image] {{ end }}"
    chat += "{{ .Content }}\n{{ end }}assistant: "
    if "insert" not in caps:
        return chat
    # /v1/completions with prompt and suffix: the backend fills in the middle.
    return (
        "{{- if .Suffix }}{{ .Prompt }}<fill-in-the-middle>{{ .Suffix }}{{ else }}"
        + chat
        + "{{ end }}"
    )


def parameters(f: ModelFacts) -> str:
    """``/api/show``'s ``parameters``: what the proxy knows that Ollama would list there, one
    ``key value`` line each, the key padded to 30 columns as Ollama prints them
    (routes.go: ``%-30s %#v``). ``num_ctx`` is the model's context length: Continue reads it
    (Ollama.ts: a line must match ``^(\\S+)\\s+((?:".*")|\\S+)$`` or the whole answer is
    ignored, FIM detection included). An embedding model has none."""
    if "completion" not in f.capabilities:
        return ""
    return f"{'num_ctx':<30} {f.context_length}"


def show(name: str, upstream_id: str, f: ModelFacts, now_ns: int) -> dict[str, Any]:
    """A synthesised ``/api/show`` body. ``model_info`` is always present: ollama-python declares
    it without a default (contract §2.4), and VS Code Copilot reads the context length there;
    the embedding length joins it when known, under Ollama's key (``<arch>.embedding_length``).
    ``template``, ``parameters`` and the Modelfile show the capabilities (:func:`template`)."""
    arch = f.family
    model_info: dict[str, Any] = {
        "general.architecture": arch,
        "general.basename": upstream_id,
        f"{arch}.context_length": f.context_length,
    }
    if f.embedding_length:
        model_info[f"{arch}.embedding_length"] = f.embedding_length
    tmpl = template(f.capabilities)
    params = parameters(f)
    modelfile = (
        "# Modelfile generated by ollama-openai-bridge\n"
        f'FROM {upstream_id}\nTEMPLATE """{tmpl}"""\n'
    )
    if params:
        modelfile += f"PARAMETER num_ctx {f.context_length}\n"
    return {
        "modelfile": modelfile,
        "parameters": params,
        "template": tmpl,
        "details": details(arch),
        "model_info": model_info,
        "capabilities": list(f.capabilities),
        "modified_at": rfc3339(now_ns),
    }


def ps_entry(name: str, f: ModelFacts, expires_ns: int) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "size": 0,
        "digest": digest(name),
        "details": details(f.family),
        "expires_at": rfc3339(expires_ns),
        "size_vram": 0,
        "context_length": f.context_length,
    }
