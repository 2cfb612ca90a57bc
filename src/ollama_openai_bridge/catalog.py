"""The backend's model list (cached) and the models recently used (for ``/api/ps``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from ollama_openai_bridge.errors import UpstreamError
from ollama_openai_bridge.model_map import positive_int, published_output
from ollama_openai_bridge.upstream import Upstream

log = structlog.get_logger("ollama_openai_bridge.catalog")

RETRY_FAILED_LIST = 5.0  # seconds before a failed first listing is tried again


class Catalog:
    """``GET /v1/models``, cached for ``ttl`` seconds, fetched once for concurrent callers.

    When a refresh fails and an older list exists, the older list is served (and the failure
    logged): a flaky backend must not empty every client's model picker.
    """

    def __init__(
        self, upstream: Upstream, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._upstream = upstream
        self._ttl = ttl
        self._clock = clock
        self._body: dict[str, Any] | None = None
        self._ids: frozenset[str] = frozenset()
        self._entries: dict[str, dict[str, Any]] = {}
        self._limits: dict[str, int] = {}  # model id -> its published output-token limit
        self.version = 0  # bumped by every successful listing
        self._expires = 0.0
        # With no list yet, a failure is remembered briefly: requests that resolve names against
        # the list must not each wait for a backend whose /v1/models is down.
        self._failure: tuple[float, UpstreamError] | None = None
        self._inflight: asyncio.Future[dict[str, Any]] | None = None

    @property
    def known_ids(self) -> frozenset[str] | None:
        """Ids from the last successful listing, without I/O; None before the first one."""
        return self._ids if self._body is not None else None

    def ids_in_order(self) -> Iterable[str]:
        """The ids of the last listing, in the backend's order."""
        return self._entries.keys()

    def entry(self, model_id: str) -> dict[str, Any] | None:
        """What the backend published about one model (OpenRouter's ``context_length`` and
        ``supported_parameters``, vLLM's ``max_model_len``...), from the last listing."""
        return self._entries.get(model_id)

    async def models(self) -> dict[str, Any]:
        now = self._clock()
        if self._body is not None and now < self._expires:
            return self._body
        if self._body is None and self._failure is not None and now < self._failure[0]:
            raise self._failure[1].with_traceback(None)  # a traceback must not grow per raise
        if self._inflight is None or self._inflight.done():  # done: all its callers left
            self._inflight = asyncio.ensure_future(self._refresh())
        inflight = self._inflight
        try:
            return await asyncio.shield(inflight)
        finally:
            if inflight.done() and self._inflight is inflight:
                self._inflight = None

    async def _refresh(self) -> dict[str, Any]:
        deployment = getattr(self._upstream, "deployment", None)
        if deployment is not None:
            # Azure's classic layout: the URL names one deployment, which is the one model.
            return self._keep({"object": "list", "data": [_deployment_entry(deployment)]})
        try:
            body = _model_list(await self._upstream.json("GET", "/models"))
            profile = getattr(self._upstream, "profile", None)
            if profile is not None and profile.name == "litellm":
                return self._keep(body, await self._litellm_limits())
        except UpstreamError as exc:
            if self._body is None:
                # MODELS_CACHE_TTL=0 caches no list, but a failure is still remembered
                window = min(self._ttl, RETRY_FAILED_LIST) or RETRY_FAILED_LIST
                self._failure = (self._clock() + window, exc)
                raise
            log.warning("models_refresh_failed_serving_cached", error=exc.message)
            self._expires = self._clock() + min(self._ttl, RETRY_FAILED_LIST)
            return self._body
        return self._keep(body)

    async def _litellm_limits(self) -> dict[str, int]:
        """LiteLLM's proxy lists ids only on /v1/models; its ``/model/info`` gives each
        deployment's ``model_info``, whose ``max_output_tokens`` comes from its model cost map or
        the operator's config (docs.litellm.ai, proxy model management). A model served by
        several deployments gets the smallest: any of them may answer. Empty when it cannot be
        read (an older LiteLLM, a key without access): MAX_OUTPUT_TOKENS applies then."""
        try:
            info = await self._upstream.json("GET", "/model/info")
        except UpstreamError as exc:
            log.info("litellm_model_info_unavailable", error=exc.message)
            return {}
        data = info.get("data") if isinstance(info, dict) else None
        limits: dict[str, int] = {}
        for item in data if isinstance(data, list) else ():
            name = item.get("model_name") if isinstance(item, dict) else None
            model_info = item.get("model_info") if isinstance(name, str) else None
            model_info = model_info if isinstance(model_info, dict) else None
            # Only max_output_tokens: its max_tokens is "legacy", the input limit when the
            # provider gives no output limit (LiteLLM's model_prices_and_context_window.json).
            found = positive_int(model_info.get("max_output_tokens")) if model_info else None
            if isinstance(name, str) and found is not None:
                limits[name] = min(limits.get(name, found), found)
        return limits

    def output_limit(self, model_id: str) -> int | None:
        """The most output tokens ``model_id`` allows, as the last listing said
        (translate/models.py ``published_output``; LiteLLM's model info), if it did."""
        return self._limits.get(model_id)

    def _keep(self, body: dict[str, Any], limits: dict[str, int] | None = None) -> dict[str, Any]:
        self._body = body
        self._entries = {
            m["id"]: m for m in body["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)
        }
        # Read once per listing, not per request (Context.target).
        self._limits = dict(limits or {})
        for model_id, entry in self._entries.items():
            found = published_output(entry)
            if found is not None:
                self._limits[model_id] = found
        self._ids = frozenset(self._entries)
        self.version += 1
        self._expires = self._clock() + self._ttl
        return body


def _model_list(body: Any) -> dict[str, Any]:
    """A backend's model list as OpenAI's ``{"object": "list", "data": [...]}``: some answer a
    bare array, or ``{"models": [...]}`` (issue #16); anything else is an empty list, said in
    the log rather than silently (``/api/tags`` would be empty)."""
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        return body
    if isinstance(body, list):
        return {"object": "list", "data": body}
    if isinstance(body, dict) and isinstance(body.get("models"), list):  # Ollama's /api/tags shape
        data = [
            {**m, "id": m.get("model") or m.get("name")}
            if isinstance(m, dict) and "id" not in m
            else m
            for m in body["models"]
        ]
        return {"object": "list", "data": data}
    log.warning("model_list_unreadable", detail="not {data: [...]}, a list or {models: [...]}")
    return {"object": "list", "data": []}


def _deployment_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "azure"}


FOREVER_S = 10 * 365 * 86400  # what /api/ps shows for keep_alive "forever" (negative)
MAX_RECENT = 1000  # models /api/ps remembers at most


class RecentModels:
    """Models used recently, with Ollama-style expiry (``keep_alive``), for ``/api/ps``.

    Bounded: at most ``max_entries`` names (a backend that accepts any model name must not let
    clients grow this without end); beyond that, the one that expires first is forgotten."""

    def __init__(
        self, clock: Callable[[], int] = time.time_ns, max_entries: int = MAX_RECENT
    ) -> None:
        self._expiry: dict[str, int] = {}
        self._clock = clock
        self._max = max_entries

    def touch(self, name: str, keep_alive_s: float) -> None:
        """``name`` was used now and stays ``keep_alive_s`` seconds (0: forget it; negative:
        "forever"; more than ten years is ten years, so every expiry is a valid date)."""
        now = self._clock()
        if keep_alive_s == 0:
            self._expiry.pop(name, None)
            return
        seconds = keep_alive_s if 0 < keep_alive_s < FOREVER_S else FOREVER_S
        expiry = self._expiry
        if name not in expiry and len(expiry) >= self._max:
            del expiry[min(expiry, key=expiry.__getitem__)]
        expiry[name] = now + int(seconds * 1e9)

    def active(self) -> list[tuple[str, int]]:
        """(name, expires_ns), longest-lived first, as Ollama sorts /api/ps."""
        now = self._clock()
        for name in [n for n, exp in self._expiry.items() if exp <= now]:
            del self._expiry[name]
        return sorted(self._expiry.items(), key=lambda item: item[1], reverse=True)
