"""Model management. Models live on the backend, so there is nothing to pull, copy or delete;
``/api/pull`` still answers as Ollama would for a model the backend has, because clients "check
or pull" before use (@langchain/ollama ``checkOrPullModel``, Open WebUI's model download)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge import schemas
from ollama_openai_bridge.errors import BadRequest, NotSupported, ProxyError, echo
from ollama_openai_bridge.http import NDJSON, json_response
from ollama_openai_bridge.routes import parse_body
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.translate.ndjson import line

router = Router()


@router.post(
    "/api/pull",
    operation_id="pull",
    summary="Succeeds for models the backend serves",
)
async def pull(request: Request) -> Response:
    ctx, req = await parse_body(request, schemas.PULL)
    name = req.get("model") or req.get("name")  # ollama-js sends "name"
    if not name:
        raise BadRequest("model is required")
    await ctx.backends.models()
    route = (await ctx.backends.resolve(name)).route
    if ctx.model_map.lookup(name) is None and route.model not in (ctx.backends.known_ids or ()):
        # Ollama's words when the registry has no such model.
        raise ProxyError("pull model manifest: file does not exist", 404)
    if req.get("stream") is False:
        return json_response({"status": "success"})
    # ollama-js stops reading a pull stream only at {"status": "success"}.
    body = line({"status": "pulling manifest"}) + line({"status": "success"})
    return Response(body, media_type=NDJSON)


async def _unsupported(request: Request) -> Response:
    raise NotSupported(
        f"{echo(request.url.path)} is not supported by this proxy: models are managed on the "
        "backend"
    )


for _name, _path, _method in (
    ("push", "/api/push", "POST"),
    ("create", "/api/create", "POST"),
    ("copy", "/api/copy", "POST"),
    ("delete", "/api/delete", "DELETE"),
    ("create_blob", "/api/blobs/{digest}", "POST"),
    ("check_blob", "/api/blobs/{digest}", "HEAD"),
):
    router.add(
        _path,
        _unsupported,
        methods=[_method],
        include_in_schema=_method != "HEAD",
        operation_id=_name,
        summary="Not supported (501): models live on the backend",
        responses={501: {"description": "not supported by this proxy"}},
    )
