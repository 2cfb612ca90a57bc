"""Everything a request handler needs, created once per app (no module globals)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.backends import Backends, Resolved
from ollama_openai_bridge.catalog import RecentModels
from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.errors import echo
from ollama_openai_bridge.exchange import Route
from ollama_openai_bridge.limits import Limits
from ollama_openai_bridge.logs import WarnOnce
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.model_map import ModelMap, ModelMeta
from ollama_openai_bridge.owner import Owner
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.render import Renderer
from ollama_openai_bridge.resilience import ConcurrencyLimiter
from ollama_openai_bridge.tool_call_store import ToolCallStore
from ollama_openai_bridge.tracing import Tracing
from ollama_openai_bridge.translate.chat import UpstreamRequest
from ollama_openai_bridge.translate.conversation import ContextCodec
from ollama_openai_bridge.translate.estimate import output_chars
from ollama_openai_bridge.translate.models import ModelFacts, facts

if TYPE_CHECKING:  # imported only when TOKEN_BUDGET is set (app.py)
    from ollama_openai_bridge.budgets import TokenBudgets

log = structlog.get_logger("ollama_openai_bridge")
MAX_NOTES = 20  # translation notes logged per request


@dataclass(slots=True)
class Context:
    settings: Settings
    backends: Backends
    model_map: ModelMap
    policy: Policy
    renderer: Renderer
    limiter: ConcurrencyLimiter
    metrics: Metrics | None = None
    limits: Limits = field(default_factory=Limits)  # REQUEST_MAX_*: settings.limits()
    recent: RecentModels = field(default_factory=RecentModels)
    tool_calls: ToolCallStore = field(default_factory=ToolCallStore)  # carry.py
    # generate's context: issued and read back under CONTEXT_SIGNING_KEY (contexts(), app.py)
    conversations: ContextCodec = field(
        default_factory=lambda: ContextCodec(secrets.token_bytes(32), Limits().context, 1 << 26)
    )
    warn_once: WarnOnce = field(default_factory=lambda: WarnOnce(log))
    budgets: TokenBudgets | None = None  # TOKEN_BUDGET; None: off, and no work per request
    tracing: Tracing | None = None  # OTEL_*: tracing.py; None: off, and no work per request

    def label(self, rec: AccessRecord, model: Resolved) -> None:
        """Name the request's model in the access record; as a metric label only if it is
        known (a client choosing model names must not grow the label set without bound)."""
        rec.model = echo(model.name)
        rec.model_label = model.name if model.known else "other"

    def count(self, rec: AccessRecord, usage: Any, answer: Any = None, streamed: int = 0) -> None:
        """Token counts from the backend's ``usage`` (OpenAI's shape, or anything) for the access
        log, the metrics and the caller's token budget. Called once per request that reached a
        model, when its answer is over (a stream: however it ended). For the budget's estimate
        of a completion the backend did not count: ``answer``, the whole answer (decoded, or its
        bytes), or ``streamed``, the characters a stream produced (ChunkReader.chars)."""
        prompt, completion = rec.count_usage(usage)
        if self.metrics is not None and (prompt or completion):
            self.metrics.count_tokens(rec.model_label, prompt, completion)
        if self.budgets is not None:
            if prompt is None and completion is None:
                self.warn_once(
                    "token_usage_not_reported",
                    rec.upstream or "",
                    detail="an answer without token usage (a backend that does not report it, "
                    "or a stream cut short before its last chunk) is counted against the key's "
                    "budget (TOKEN_BUDGET) as an estimate: characters / 4",
                )
            ticket = rec.ticket
            if ticket is None:  # not admitted (every POST to a backend is): counted as reported
                self.budgets.spend(rec.caller, prompt, completion)
                return
            chars = streamed
            if completion is None and not chars and answer is not None:
                chars = output_chars(answer)
            ticket.answered(prompt, completion, chars)

    def held(self) -> Held:
        """``async with ctx.held() as owner``: the owner of one request's bounded resources,
        holding its concurrency slot. Whatever else the request takes (upstream response,
        gauges) is pushed onto it; a streamed response takes it over with ``pop_all()`` and
        closes it when the stream ends."""
        return Held(self.limiter)

    def facts(
        self,
        name: str,
        route: Route | None = None,
        meta: ModelMeta | None = None,
        *,
        insert: bool = True,
    ) -> ModelFacts:
        """What /api/tags and /api/show report of ``name``; ``insert=False`` leaves out the
        ``insert`` capability (per request only ``thinking`` matters: one copy less)."""
        route = route or self.backends.routes(name)[0]
        return facts(
            name,
            route.model,
            meta or self.model_map.lookup(name),
            self.settings.default_context_length,
            self.backends.entry(route),
            insert=insert and route.policy.profile.fim,
        )

    def target(self, name: str, route: Route) -> Target:
        """What a request for ``name`` sent along ``route`` needs to know of the model."""
        meta = self.model_map.lookup(name)
        f = self.facts(name, route, meta, insert=False)
        limit: tuple[int, str] | None = None
        if meta is not None and meta.max_output_tokens:
            limit = (meta.max_output_tokens, "MODEL_MAPPING_FILE")
        elif published := self.backends.output_limit(route):
            limit = (published, "the backend's model list")
        return Target.of(
            route.model,
            route.policy.profile,
            style=(meta.think_style if meta else None) or self.settings.think_style,
            thinking="thinking" in f.capabilities,
            listed=bool(meta and meta.capabilities),
            learned=route.upstream.refusals.get(route.model),
            max_output=limit,
        )

    def report(self, up: UpstreamRequest, model: str) -> None:
        """Log what the translation could not carry over (nothing is dropped silently)."""
        dropped = up.dropped_options
        for name in dropped[:MAX_NOTES]:  # a body of 100,000 option names is 20 lines, not 100,000
            self.warn_once(
                "option_not_sent_upstream",
                echo(name),
                hint="no OpenAI equivalent; forward it with PASSTHROUGH_OPTIONS if the backend "
                "accepts it",
            )
        if len(dropped) > MAX_NOTES:
            log.warning(
                "option_not_sent_upstream",
                key=f"... and {len(dropped) - MAX_NOTES} more options",
                model=echo(model),
            )
        self.notes(up.notes, model)
        # at most PER_REQUEST lines of their own: a /v1/responses body names its hosted tools
        self.warn_once.each("backend_adaptation", up.warnings, model=echo(model))
        self.adapted(up.adapted, model)

    def adapted(self, adaptations: list[str], model: str) -> None:
        """What was done for the backend's sake, at DEBUG (docs/BACKENDS.md), each once: a
        history of many items may note the same adaptation for each."""
        if adaptations:
            distinct = list(dict.fromkeys(adaptations))
            log.debug("backend_adapted", model=echo(model), adaptations=distinct)

    def notes(self, notes: list[str], model: str) -> None:
        """Log each distinct note once, at most :data:`MAX_NOTES` lines per request: a history of
        many unanswered tool calls must not become as many log lines."""
        distinct = list(dict.fromkeys(notes))
        for note in distinct[:MAX_NOTES]:
            log.warning("translation_note", note=echo(note), model=echo(model))
        if len(distinct) > MAX_NOTES:
            log.warning(
                "translation_note",
                note=f"... and {len(distinct) - MAX_NOTES} more notes like these",
                model=echo(model),
            )


class Held(Owner):
    """An :class:`Owner` that takes a concurrency slot on entry (``Busy`` if none is free in
    time) and gives it back as its first callback, so last at close."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        super().__init__()
        self._limiter = limiter

    async def __aenter__(self) -> Held:
        slot = self._limiter.slot()
        await slot.__aenter__()
        self.push_async_callback(slot.__aexit__, None, None, None)
        return self


def contexts(settings: Settings) -> ContextCodec:
    """The codec of generate's ``context`` for these settings: signed with CONTEXT_SIGNING_KEY,
    or with a random key of this process when it is unset (cli.py gives the processes of one
    command the same one); at most REQUEST_MAX_CONTEXT integers, and no more than a request
    body may carry back (half of REQUEST_MAX_VALUES, a sixteenth of REQUEST_MAX_SIZE in bytes);
    read back within REQUEST_MAX_SIZE bytes of conversation."""
    secret = settings.context_signing_key.get_secret_value().encode() or secrets.token_bytes(32)
    limit = min(
        settings.request_max_context,
        settings.request_max_values // 2,
        settings.request_max_size // 16,
    )
    return ContextCodec(secret, max(limit, 1), settings.request_max_size)


def get_context(request: Request) -> Context:
    ctx: Any = request.app.state.ctx
    return ctx  # type: ignore[no-any-return]
