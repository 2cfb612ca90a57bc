"""Direct dispatch of the hot routes, in front of Starlette's router.

Starlette's router stays for the rare routes; but on the per-request path a framework's routing
and exception middleware cost a measurable share of the proxy's CPU (FastAPI's, which served
the routes before routing.py, about a third: py-spy, bench/README.md). The hot handlers take a
raw ``Request`` and return a ``Response`` anyway, so an exact ``(method, path)`` lookup can call
them directly. Errors are rendered by the same functions the app's exception handlers use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ollama_openai_bridge.access import record
from ollama_openai_bridge.errors import ShuttingDown
from ollama_openai_bridge.http import REPORTS_KEY, STOPPING_KEY, WATCH_KEY, DisconnectWatch

Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class FastRoutes:
    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[tuple[str, str], Handler],
        on_error: ErrorHandler,
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        watch = scope[WATCH_KEY] = DisconnectWatch(receive, task, reported=REPORTS_KEY in scope)
        request = Request(scope, receive)
        response: Response | None = None
        try:
            try:
                response = await handler(request)
            except ClientDisconnect:
                return  # the client left while sending its body: nobody to answer
            except Exception as exc:  # rendered exactly as the app's handlers would
                response = await self.on_error(request, exc)
            await response(scope, receive, send)
        except asyncio.CancelledError:
            if watch.gone:
                # The client left before its answer: the handler's owner has given back the
                # slot and closed the backend call on the way out. 499 as nginx logs it.
                task.uncancel()
                rec = record(scope)
                rec.error, rec.error_status = "client closed the connection", 499
            elif scope.get(STOPPING_KEY) and response is None:
                # The server's, as it stops, before the answer began (waiting for a slot or the
                # backend's first byte): a 503 in the route's dialect, not a 500 and a
                # traceback. A stream under way ends itself (http.StreamBody).
                task.uncancel()
                failure = await self.on_error(request, ShuttingDown())
                await failure(scope, receive, send)
            else:
                raise
        finally:
            watch.stop()
