"""Direct dispatch of the hot routes, in front of FastAPI's router.

FastAPI stays for the OpenAPI schema, ``/docs`` and the rare routes; but on the per-request path
its routing, dependency solving and exception middleware cost about a third of the proxy's CPU
(measured with py-spy, bench/README.md). The hot handlers take a raw ``Request`` and return a
``Response`` anyway, so an exact ``(method, path)`` lookup can call them directly. Errors are
rendered by the same functions FastAPI's exception handlers use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except ClientDisconnect:
            return  # the client left while sending its body: nobody to answer
        except Exception as exc:  # rendered exactly as FastAPI's handlers would
            response = await self.on_error(request, exc)
        await response(scope, receive, send)
