"""The app's route table, as data: each handler module's :class:`Router` lists its
:class:`Operation` s; ``app.create_app`` makes Starlette routes of them and ``openapi.build``
documents them.

FastAPI's ``APIRouter`` did this before, but the proxy used nothing else of FastAPI: every
handler takes a raw ``Request`` and returns a ``Response`` (no dependency injection, no models),
the OpenAPI document is completed from tables anyway (openapi/), and the hot routes bypassed
its stack (fastpath.py). Importing FastAPI cost 11.5 MB of resident memory per worker, a third
of the proxy's memory above the bare uvicorn + aiohttp stack (issue #18: "import what a request
does not need only when it is needed"). Starlette, which FastAPI is built on, serves the routes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One method at one path: its ``handler``, and what the OpenAPI document says of it
    (``operation_id``, ``summary``, ``description``; ``media_type`` of a success;
    ``responses``: other statuses, ``{status: {"description": ...}}``). A path parameter is
    written as Starlette's (``{model:path}``); the document names it plainly (``{model}``)."""

    path: str
    method: str
    handler: Handler
    operation_id: str | None = None
    summary: str | None = None
    description: str | None = None
    media_type: str = "application/json"
    responses: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    include_in_schema: bool = True

    @property
    def documented_path(self) -> str:
        """The path as OpenAPI writes it: ``/v1/models/{model}``, no convertor."""
        return re.sub(r"{(\w+):\w+}", r"{\1}", self.path)


class Router:
    """The operations of one handler module, in the order they are declared (the order of the
    OpenAPI document's paths, and of matching)."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def add(
        self,
        path: str,
        handler: Handler,
        *,
        methods: list[str],
        operation_id: str | None = None,
        summary: str | None = None,
        description: str | None = None,
        media_type: str = "application/json",
        responses: Mapping[int, Mapping[str, Any]] | None = None,
        include_in_schema: bool = True,
    ) -> None:
        """Route each of ``methods`` at ``path`` to ``handler`` (one operation per method)."""
        for method in methods:
            self.operations.append(
                Operation(
                    path,
                    method,
                    handler,
                    operation_id,
                    summary,
                    description,
                    media_type,
                    dict(responses or {}),
                    include_in_schema,
                )
            )

    def post(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """A decorator: route ``POST path`` to the function (``kwargs``: :meth:`add`'s)."""

        def decorate(handler: Handler) -> Handler:
            self.add(path, handler, methods=["POST"], **kwargs)
            return handler

        return decorate

    def get_and_head(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """A decorator: serve GET and HEAD (Ollama answers both; the Go client's heartbeat is
        ``HEAD /``), with one operation in the OpenAPI document."""

        def decorate(handler: Handler) -> Handler:
            self.add(path, handler, methods=["HEAD"], include_in_schema=False)
            self.add(path, handler, methods=["GET"], **kwargs)
            return handler

        return decorate
