"""The documentation endpoints: ``/openapi.json``, ``/openapi.yaml``, ``/docs`` and ``/redoc``.

Apart from the document's builder (the :mod:`~ollama_openai_bridge.openapi` package), so that
serving them costs no memory until someone asks: the builder and its tables (about 0.2 MB of a
worker's heap, issue #18), PyYAML and FastAPI's page templates are imported by the first request
that needs them, never by ``create_app()`` (tests/integration/test_lazy_imports.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route


class Documented(Protocol):
    """The app, as the document's routes see it."""

    title: str

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (``openapi.build``), made at its first request."""


def routes(app: Documented, yaml_url: str | None) -> list[Route]:
    """The routes that serve ``app.openapi()``: ``/openapi.json``, ``/docs`` (Swagger UI) with
    its OAuth2 redirect page, ``/redoc`` and, at ``yaml_url``, the YAML document. The pages'
    HTML comes from FastAPI's ``fastapi.openapi.docs``, imported only when a page is asked for."""
    url = "/openapi.json"

    async def openapi_json(_: Request) -> Response:
        return JSONResponse(app.openapi())

    async def swagger(_: Request) -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html  # noqa: PLC0415 -- see above

        title = app.title + " - Swagger UI"
        page = get_swagger_ui_html(
            openapi_url=url, title=title, oauth2_redirect_url="/docs/oauth2-redirect"
        )
        return HTMLResponse(page.body)

    async def swagger_redirect(_: Request) -> Response:
        from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html  # noqa: PLC0415

        return HTMLResponse(get_swagger_ui_oauth2_redirect_html().body)

    async def redoc(_: Request) -> Response:
        from fastapi.openapi.docs import get_redoc_html  # noqa: PLC0415 -- see above

        return HTMLResponse(get_redoc_html(openapi_url=url, title=app.title + " - ReDoc").body)

    text: list[str] = []

    async def openapi_yaml(_: Request) -> Response:
        if not text:
            import yaml  # noqa: PLC0415 -- only when the YAML document is asked for

            text.append(yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True))
        return Response(text[0], media_type="application/yaml")

    out = [
        Route(url, openapi_json, methods=["GET"], include_in_schema=False),
        Route("/docs", swagger, methods=["GET"], include_in_schema=False),
        Route("/docs/oauth2-redirect", swagger_redirect, methods=["GET"], include_in_schema=False),
        Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
    ]
    if yaml_url is not None:
        out.append(Route(yaml_url, openapi_yaml, methods=["GET"], include_in_schema=False))
    return out
