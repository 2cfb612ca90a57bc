"""JSON log lines: the access log's own path writes what the general pipeline would, redacted,
and flushes once per turn of the event loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from ollama_openai_bridge.errors import Redactor
from ollama_openai_bridge.logs import REQUEST_ID, LineHandler, access_handler, configure_logging

SECRET = "sk-secret-0123456789"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = CountingStream()
    configure_logging("INFO", Redactor([SECRET]), stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.getvalue().splitlines()]


def test_access_line_matches_the_general_pipeline(stream: CountingStream) -> None:
    handler = access_handler()
    assert isinstance(handler, LineHandler)
    token = REQUEST_ID.set("req-1")
    try:
        handler.access({"method": "POST", "path": "/api/chat", "status": 200, "model": SECRET})
        structlog.get_logger("ollama_openai_bridge.access").info(
            "request", method="POST", path="/api/chat", status=200, model=SECRET
        )
    finally:
        REQUEST_ID.reset(token)
    fast, general = lines(stream)
    assert ISO_UTC.match(str(fast.pop("timestamp")))
    assert ISO_UTC.match(str(general.pop("timestamp")))
    assert fast == general
    assert fast["model"] == "[redacted]"
    assert fast["logger"] == "ollama_openai_bridge.access"
    assert fast["request_id"] == "req-1"


def test_lines_of_one_loop_turn_are_flushed_together(stream: CountingStream) -> None:
    handler = access_handler()
    assert handler is not None

    async def burst() -> tuple[int, int]:
        before = stream.flushes
        for i in range(5):
            handler.access({"method": "GET", "path": f"/api/tags/{i}", "status": 200})
        pending = stream.flushes - before
        await asyncio.sleep(0)  # the next turn of the loop
        return pending, stream.flushes - before

    assert asyncio.run(burst()) == (0, 1)
    assert [line["path"] for line in lines(stream)] == [f"/api/tags/{i}" for i in range(5)]


def test_outside_a_loop_each_line_is_flushed(stream: CountingStream) -> None:
    handler = access_handler()
    assert handler is not None
    handler.access({"method": "GET", "path": "/", "status": 200})
    assert stream.flushes == 1


def test_no_access_path_when_the_level_filters_it(stream: CountingStream) -> None:
    logging.getLogger().setLevel("WARNING")
    assert access_handler() is None


def test_values_json_cannot_encode_are_written_as_repr(stream: CountingStream) -> None:
    structlog.get_logger("x").warning("odd", value=object(), keys={1: "a"})
    (line,) = lines(stream)
    assert str(line["value"]).startswith("<object object")
    assert line["keys"] == {"1": "a"}


class Spy:
    """A logger that keeps (level, event, fields) of what it is given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self.lines.append(("debug", event, kw))

    @property
    def levels(self) -> list[str]:
        return [level for level, _, _ in self.lines]


def test_warn_once_remembers_a_bounded_number_of_keys_per_kind() -> None:
    from ollama_openai_bridge.logs import WarnOnce

    spy = Spy()
    warn = WarnOnce(spy)
    warn.MAX_KEYS = 3
    for key in ("a", "a", "b", "c", "a", "d", "e", "b"):
        warn("option_not_sent_upstream", key)
    # the least recently seen is forgotten first: "b" went when "e" came, and warns again;
    # nothing new is ever muted
    assert spy.levels == [
        *("warning", "debug", "warning", "warning", "debug"),
        *("warning", "warning", "warning"),
    ]
    assert all(len(seen) <= 3 for seen in warn._seen.values())


def test_one_kinds_flood_never_mutes_another_kinds_first_warning() -> None:
    """The review of #17: 12,000 unknown fields in one /v1/messages body filled the one set of
    keys the process had, and the next hosted tool dropped on /v1/responses went to DEBUG."""
    from ollama_openai_bridge.logs import WarnOnce

    spy = Spy()
    warn = WarnOnce(spy)
    for i in range(30):  # 30 requests of 2,000 new names each: 60,000 names
        warn.names("request_field_unknown", [f"f{i}_{j}" for j in range(2_000)], route="/v1/x")
    assert sum(len(seen) for seen in warn._seen.values()) <= warn.MAX_KEYS
    assert spy.levels == ["warning"] * 30  # one line per request
    warn("backend_adaptation", "responses hosted tool web_search", detail="dropped")
    warn("request_field_unknown", "metadata", route="/v1/messages")  # another route
    assert spy.lines[-2][:2] == ("warning", "backend_adaptation")
    assert spy.lines[-1][0] == "warning"


def test_names_are_one_line_naming_the_first_new_ones_and_their_count() -> None:
    from ollama_openai_bridge.logs import WarnOnce

    spy = Spy()
    warn = WarnOnce(spy)
    names = [f"field_{i}" for i in range(12_000)]
    warn.names("request_field_unknown", names, route="/v1/messages", detail="ignored")
    ((level, event, fields),) = spy.lines
    assert (level, event) == ("warning", "request_field_unknown")
    assert fields == {
        "keys": names[:20],
        "count": 12_000,
        "route": "/v1/messages",
        "detail": "ignored",
    }
    # the names it gave are remembered; the next request names the next ones
    warn.names("request_field_unknown", names[:40], route="/v1/messages")
    assert spy.lines[-1][2]["keys"] == names[20:40]
    assert spy.lines[-1][2]["count"] == 20
    warn.names("request_field_unknown", names[:40], route="/v1/messages")
    assert spy.lines[-1][0] == "debug"  # nothing new: said before


def test_each_bounds_one_requests_lines() -> None:
    from ollama_openai_bridge.logs import WarnOnce

    spy = Spy()
    warn = WarnOnce(spy)
    pairs = [(f"tool t{i} (anthropic)", f"tool t{i} left out") for i in range(1_000)]
    warn.each("request_field_ignored", [*pairs, *pairs], route="/v1/messages")
    assert len(spy.lines) == 21  # 20 a line each, then one line for the other 980
    assert spy.lines[0] == (
        "warning",
        "request_field_ignored",
        {"key": "tool t0 (anthropic)", "route": "/v1/messages", "detail": "tool t0 left out"},
    )
    assert spy.lines[-1][2]["count"] == 980
