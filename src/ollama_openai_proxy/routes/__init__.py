"""Thin HTTP handlers: parse -> translate -> call -> translate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter
from pydantic import TypeAdapter
from starlette.requests import Request

from ollama_openai_proxy import schemas
from ollama_openai_proxy.context import Context, get_context
from ollama_openai_proxy.http import read_body

T = TypeVar("T")


async def parse_body(request: Request, adapter: TypeAdapter[T]) -> tuple[Context, T]:
    """The app context and the validated JSON body (413 if too large, 400 if invalid)."""
    ctx = get_context(request)
    return ctx, schemas.parse(adapter, await read_body(request, ctx.settings.request_max_size))


def get_and_head(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Serve GET and HEAD (Ollama answers both; the Go client's heartbeat is ``HEAD /``), with one
    operation in the OpenAPI schema."""

    def decorate(func: Any) -> Any:
        router.add_api_route(path, func, methods=["HEAD"], include_in_schema=False)
        router.add_api_route(path, func, methods=["GET"], **kwargs)
        return func

    return decorate
