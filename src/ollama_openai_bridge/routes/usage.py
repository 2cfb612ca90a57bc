"""``GET /v1/usage``: what inbound keys used of their token budgets (TOKEN_BUDGET, issue #20).

Protected like every route but the probes: an inbound key reads its own usage only, the
USAGE_ADMIN_KEY every key's (``?key=`` a key id or name picks one). Keys appear by key id and
name, never themselves.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge.access import ADMIN_CALLER, record
from ollama_openai_bridge.context import get_context
from ollama_openai_bridge.errors import Forbidden, RouteNotFound, echo
from ollama_openai_bridge.http import json_response
from ollama_openai_bridge.routing import Router

router = Router()


@router.get_and_head(
    "/v1/usage",
    operation_id="usage",
    summary="Token budgets: what each inbound key used, per window (TOKEN_BUDGET)",
)
async def usage(request: Request) -> Response:
    ctx = get_context(request)
    budgets = ctx.budgets
    if budgets is None:
        raise RouteNotFound(
            "token budgets are off: set TOKEN_BUDGET or TOKEN_BUDGETS_FILE (with PROXY_API_KEYS)"
        )
    caller = record(request.scope).caller
    wanted = request.query_params.get("key")
    if caller == ADMIN_CALLER:
        callers = budgets.find(wanted)
        if not callers:
            raise RouteNotFound(f"no inbound key has the id or name '{echo(wanted or '')}'")
    else:
        account = budgets.accounts.get(caller)
        if account is None:  # budgets need inbound keys, and each key has an account
            raise Forbidden("this key has no token budget")
        if wanted is not None and wanted not in (account.name, account.key_id):
            raise Forbidden("a key reads its own usage only; USAGE_ADMIN_KEY reads every key's")
        callers = [caller]
    keys = await budgets.usage(callers)
    return json_response({"object": "usage", "shared": budgets.shared, "keys": keys})
