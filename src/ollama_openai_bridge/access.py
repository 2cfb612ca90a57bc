"""The per-request record: what the access log line and the request metrics report.

One :class:`AccessRecord` per HTTP request, created by the outermost middleware and kept in
``scope["proxy"]``; handlers and the renderer fill in what only they know. A typed record, not a
dict, so every field has one name and one meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

if TYPE_CHECKING:
    from ollama_openai_bridge.budget_plan import Ticket

SCOPE_KEY = "proxy"
# The caller of a request made with USAGE_ADMIN_KEY (security.GuardMiddleware, /v1/usage only).
ADMIN_CALLER = "admin"


@dataclass(slots=True)
class AccessRecord:
    """Facts about one request. Units: milliseconds for ``ttft_ms``; token counts as the
    backend reported them."""

    model: str | None = None  # the client's model name
    model_label: str = ""  # ``model`` as a bounded metric label (context.Context.label)
    upstream: str | None = None  # the upstream that served (or was tried last)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None  # time to first token (first streamed line)
    error: str | None = None  # the redacted message of the error the client got
    # The error's status. For a stream that ended in an error line the wire status was 200
    # already; this is the status the metrics count, so error rates include such streams.
    error_status: int | None = None
    # Who asked: "key:" + a hash of the inbound key (security.GuardMiddleware), ADMIN_CALLER
    # for USAGE_ADMIN_KEY, "" without PROXY_API_KEYS. Scopes per-client state (tool_call_store,
    # token budgets); never logged.
    caller: str = ""
    # The response cache (response_cache.py): the request's Cache-Control directive (no-cache,
    # no-store), then what the cache did (HIT, MISS, BYPASS, UNCACHEABLE); None: cache off.
    cache_control: str = ""
    cache: str | None = None
    # The token budget's account of this request (budget_plan.Ticket): made when it is admitted
    # (TokenBudgets.wrap), filled by Context.count, settled by budgets.BudgetGuard; never logged.
    ticket: Ticket | None = None

    def fields(self) -> dict[str, Any]:
        """The fields that are set, for the access log line."""
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = self.model
        if self.upstream is not None:
            out["upstream"] = self.upstream
        if self.prompt_tokens is not None:
            out["prompt_tokens"] = self.prompt_tokens
        if self.completion_tokens is not None:
            out["completion_tokens"] = self.completion_tokens
        if self.ttft_ms is not None:
            out["ttft_ms"] = self.ttft_ms
        if self.cache is not None:
            out["cache"] = self.cache
        if self.error is not None:
            out["error"] = self.error
            out["error_status"] = self.error_status
        return out

    def count_usage(self, usage: Any) -> tuple[int | None, int | None]:
        """Take ``usage`` (OpenAI's ``{"prompt_tokens", "completion_tokens"}``, or anything);
        returns the two counts that were integers."""
        if not isinstance(usage, dict):
            return None, None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        prompt = prompt if isinstance(prompt, int) else None
        completion = completion if isinstance(completion, int) else None
        if prompt is not None:
            self.prompt_tokens = prompt
        if completion is not None:
            self.completion_tokens = completion
        return prompt, completion


def record(scope: Scope) -> AccessRecord:
    """The request's record (a fresh one if the middleware did not run, as in unit tests)."""
    rec = scope.get(SCOPE_KEY)
    if rec is None:
        rec = scope[SCOPE_KEY] = AccessRecord()
    return rec
