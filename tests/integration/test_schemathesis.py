"""The OpenAPI document and the app's behaviour agree: schemathesis generates requests from the
served ``/openapi.json`` -- the documented examples, the coverage phase's boundary values and
undeclared methods, and fuzzed bodies valid and invalid -- and runs every check it has on the
answers (no 5xx, statuses, content types, headers and bodies as documented, valid data accepted,
invalid data refused, 405s with ``Allow``...).

The app runs in-process (schemathesis's ASGI transport) against the strict fake backend on
loopback. Seeded and derandomised, so a run is the same every time; ``MAX_EXAMPLES`` bounds it:
about 3,200 requests, one to two minutes on two cores, each operation well inside the 120 s a
test may take.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from ollama_openai_bridge.app import ProxyApp, create_app
from ollama_openai_bridge.translate.conversation import ContextCodec, Conversation
from tests.fake_upstream import FakeUpstream
from tests.servers import settings_for

MAX_EXAMPLES = 200
SEED = 20261130

# Operations that exist to refuse: models live on the backend, so these answer 501 by design
# (documented). not_a_server_error counts any 5xx as a failure; here the 501 is the answer.
REFUSED = ["push", "create", "copy", "delete", "create_blob"]
# The /v1 bodies are forwarded as sent, and the backend validates them: the document gives what
# OpenAI requires (model, messages...), but a body that meets only that -- messages of arbitrary
# objects -- is the backend's to refuse (400), as OpenAI itself would. So "valid data is
# accepted" cannot hold for them; every other check does.
FORWARDED = ["openai_chat_completions", "openai_completions", "openai_embeddings"]
# /v1/responses validates its body's types here and reads its items, tools, reasoning and text
# objects in the translation, which refuses (400, naming the field) what it cannot serve: an
# item of an unknown type, a function call without call_id, a file part... The document gives
# those objects' types, not every rule of OpenAI's about them; so, as for the forwarded bodies,
# "valid data is accepted" cannot hold, and every other check does.
TRANSLATED = ["openai_responses"]
# Anthropic's content blocks are an open union of a dozen object types, each checked by the
# translator in Anthropic's words (a text block's text, an image's source, a tool_use's name):
# the document outlines them as objects, so a body of arbitrary blocks is refused (400) as
# Anthropic's API would refuse it. Invalid data must still be refused.
ANTHROPIC = ["anthropic_messages", "anthropic_count_tokens"]

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
        # Every check; the response time one needs a limit to run: ten seconds is for hangs,
        # an in-process answer from a loopback backend takes milliseconds.
        "checks": {"enabled": True, "max_response_time": 10.0},
        "operations": [
            {
                "include-operation-id": REFUSED,
                "checks": {
                    "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501"]}
                },
            },
            {
                "include-operation-id": FORWARDED + TRANSLATED + ANTHROPIC,
                "checks": {"positive_data_acceptance": {"enabled": False}},
            },
        ],
    }
)


# The document as the app serves it (GET /openapi.json answers app.openapi()); building it
# starts nothing. The requests go to the app of the `app` fixture, whose settings differ only
# in the backend's address.
schema = schemathesis.openapi.from_dict(
    create_app(settings_for("http://127.0.0.1:9/v1")).openapi(), config=CONFIG
)


# generate's context is opaque: only what the proxy issued under its key is valid data, which
# no schema can generate. Contexts of valid integers are replaced by one the app issued; any
# other (wrong types, out of range) stays, and must be refused.
KEY = "schemathesis-context-signing-key-0123456789"
ISSUED: list[Any] = ContextCodec(KEY.encode(), 1000, 1 << 20).encode(
    Conversation(None, (("hi", "hey"),)), []
)


def issued_context(case: schemathesis.Case[Any]) -> None:
    body: Any = case.body
    value = body.get("context") if isinstance(body, dict) else None
    if (
        case.operation.path == "/api/generate"
        and isinstance(value, list)
        and value
        # JSON Schema's integers include 262143.0, and so does the app's validation
        and all(type(v) in (int, float) and float(v).is_integer() and 0 <= v < 2**24 for v in value)
    ):
        case.body = {**body, "context": ISSUED}


@pytest.fixture(scope="module")
def app() -> Iterator[ProxyApp]:
    upstream = FakeUpstream().start()
    try:
        yield create_app(settings_for(upstream.url, context_signing_key=KEY))
    finally:
        asgi.shutdown_lifespans()  # schemathesis started the app's lifespan on its first call
        upstream.stop()


@schema.parametrize()
def test_the_document_and_the_app_agree(case: schemathesis.Case[Any], app: ProxyApp) -> None:
    issued_context(case)
    case.call_and_validate(app=app)
