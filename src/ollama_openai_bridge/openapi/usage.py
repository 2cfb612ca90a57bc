"""The OpenAPI entry of ``GET /v1/usage`` (routes/usage.py): token budgets per inbound key."""

from __future__ import annotations

from typing import Any

from ollama_openai_bridge.openapi.shapes import BOOL, INT, STR, json_content, obj

_COUNT_OR_NULL = {"type": ["integer", "null"]}
_WINDOW = obj(
    (
        "limit",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "remaining",
        "resets_at",
        "reset_in_s",
    ),
    limit=_COUNT_OR_NULL,
    prompt_tokens=INT,
    completion_tokens=INT,
    total_tokens=INT,
    remaining=_COUNT_OR_NULL,
    resets_at={**STR, "format": "date-time"},
    reset_in_s=INT,
)
_KEY = obj(
    ("key_id", "name", "windows"),
    key_id=STR,
    name={"type": ["string", "null"]},
    windows=obj(
        ("minute", "hour", "day", "month"),
        **dict.fromkeys(("minute", "hour", "day", "month"), _WINDOW),
    ),
)


def _window(limit: int | None, prompt: int, completion: int, resets: str, seconds: int) -> Any:
    total = prompt + completion
    return {
        "limit": limit,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "remaining": None if limit is None else max(limit - total, 0),
        "resets_at": resets,
        "reset_in_s": seconds,
    }


USAGE: dict[str, dict[str, Any]] = {
    "usage": {
        "description": "What inbound keys used of their token budgets (TOKEN_BUDGET, "
        "TOKEN_BUDGETS_FILE): prompt and completion tokens in the current fixed UTC minute, "
        "hour, day and month, each window's limit (null: none), what remains and when it "
        "resets. An inbound key reads its own entry; USAGE_ADMIN_KEY (as `Authorization: Bearer`) "
        "reads every key's, or one with `?key=`. Keys are named by key id (the first 8 hex "
        "digits of their SHA-256) and by the name the budgets file gives them, never shown. "
        "`shared`: whether the counts live in Redis, the same for every replica. 404 when "
        "budgets are off; 503 when their Redis does not answer.",
        "tag": "operations",
        "openai": True,
        "query_parameters": [
            {
                "name": "key",
                "in": "query",
                "required": False,
                "description": "A key id or name: that key only (USAGE_ADMIN_KEY; an inbound key "
                "may name itself, another key is a 403).",
                "schema": STR,
                "example": "ci-bot",
            }
        ],
        "response": json_content(
            obj(
                ("object", "shared", "keys"),
                object={"const": "usage"},
                shared=BOOL,
                keys={"type": "array", "items": _KEY},
            ),
            {
                "object": "usage",
                "shared": True,
                "keys": [
                    {
                        "key_id": "3f9a1c2e",
                        "name": "ci-bot",
                        "windows": {
                            "minute": _window(20000, 1200, 300, "2026-11-23T10:01:00Z", 34),
                            "hour": _window(None, 52000, 9100, "2026-11-23T11:00:00Z", 2974),
                            "day": _window(1000000, 410000, 77000, "2026-11-24T00:00:00Z", 50374),
                            "month": _window(None, 5300000, 950000, "2026-12-01T00:00:00Z", 654),
                        },
                    }
                ],
            },
        ),
        "errors": (401, 403, 404, 429, 503),
    }
}
