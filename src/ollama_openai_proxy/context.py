"""Everything a request handler needs, created once per app (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import Scope

from ollama_openai_proxy.backends import Backends, Route
from ollama_openai_proxy.catalog import RecentModels
from ollama_openai_proxy.config import Settings
from ollama_openai_proxy.errors import Redactor
from ollama_openai_proxy.logs import WarnOnce
from ollama_openai_proxy.metrics import Metrics
from ollama_openai_proxy.middleware import info
from ollama_openai_proxy.resilience import ConcurrencyLimiter
from ollama_openai_proxy.translate.chat import UpstreamRequest
from ollama_openai_proxy.translate.models import ModelFacts, ModelMap, ModelMeta, facts
from ollama_openai_proxy.translate.policy import Policy, Target

log = structlog.get_logger("ollama_openai_proxy")


@dataclass(slots=True)
class Context:
    settings: Settings
    backends: Backends
    model_map: ModelMap
    policy: Policy
    redact: Redactor
    limiter: ConcurrencyLimiter
    metrics: Metrics | None = None
    recent: RecentModels = field(default_factory=RecentModels)
    warn_once: WarnOnce = field(default_factory=lambda: WarnOnce(log))
    _labels: set[str] = field(default_factory=set)

    def model_label(self, name: str) -> str:
        """``name`` as a metric label if the backend or the map knows it, else ``other``."""
        if name in self._labels:
            return name
        known = self.backends.known_ids
        if self.model_map.lookup(name) is not None or (
            known is not None and self.upstream_model(name) in known
        ):
            self._labels.add(name)  # bounded: only names the backend or the map knows
            return name
        return "other"

    def observe(self, scope: Scope, model: str, usage: Any) -> None:
        """Report model and token counts for the access log and the metrics."""
        details = info(scope)
        if details.get("model") == model:
            label = details["model_label"]  # labelled once per request
        else:
            details["model"] = model
            label = details["model_label"] = self.model_label(model)
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int):
                details["prompt_tokens"] = prompt
            if isinstance(completion, int):
                details["completion_tokens"] = completion
            if self.metrics is not None:
                self.metrics.count_tokens(
                    label,
                    prompt if isinstance(prompt, int) else None,
                    completion if isinstance(completion, int) else None,
                )

    def upstream_model(self, name: str) -> str:
        """The id the first upstream of ``name``'s route knows it by."""
        return self.backends.routes(name)[0].model

    def facts(
        self, name: str, route: Route | None = None, meta: ModelMeta | None = None
    ) -> ModelFacts:
        route = route or self.backends.routes(name)[0]
        return facts(
            name,
            route.model,
            meta or self.model_map.lookup(name),
            self.settings.default_context_length,
            self.backends.entry(route),
        )

    def target(self, name: str, route: Route) -> Target:
        """What a request for ``name`` sent along ``route`` needs to know of the model."""
        meta = self.model_map.lookup(name)
        f = self.facts(name, route, meta)
        style = (meta.think_style if meta else None) or self.settings.think_style
        return Target(route.model, style, "thinking" in f.capabilities)

    def report(self, up: UpstreamRequest, model: str) -> None:
        """Log what the translation could not carry over (nothing is dropped silently)."""
        for name in up.dropped_options:
            self.warn_once(
                "option_not_sent_upstream",
                name,
                hint="no OpenAI equivalent; forward it with PASSTHROUGH_OPTIONS if the backend "
                "accepts it",
            )
        self.notes(up.notes, model)

    def notes(self, notes: list[str], model: str) -> None:
        for note in notes:
            log.warning("translation_note", note=note, model=model)


def get_context(request: Request) -> Context:
    ctx: Any = request.app.state.ctx
    return ctx  # type: ignore[no-any-return]
