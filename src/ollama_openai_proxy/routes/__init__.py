"""Thin HTTP handlers: parse -> translate -> call -> translate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter


def get_and_head(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Serve GET and HEAD (Ollama answers both; the Go client's heartbeat is ``HEAD /``), with one
    operation in the OpenAPI schema."""

    def decorate(func: Any) -> Any:
        router.add_api_route(path, func, methods=["HEAD"], include_in_schema=False)
        router.add_api_route(path, func, methods=["GET"], **kwargs)
        return func

    return decorate
