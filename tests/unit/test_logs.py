"""JSON log lines: the access log's own path writes what the general pipeline would, redacted,
and flushes once per turn of the event loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog

from ollama_openai_proxy.errors import Redactor
from ollama_openai_proxy.logs import REQUEST_ID, LineHandler, access_handler, configure_logging

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
        structlog.get_logger("ollama_openai_proxy.access").info(
            "request", method="POST", path="/api/chat", status=200, model=SECRET
        )
    finally:
        REQUEST_ID.reset(token)
    fast, general = lines(stream)
    assert ISO_UTC.match(str(fast.pop("timestamp")))
    assert ISO_UTC.match(str(general.pop("timestamp")))
    assert fast == general
    assert fast["model"] == "[redacted]"
    assert fast["logger"] == "ollama_openai_proxy.access"
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


def test_warn_once_remembers_a_bounded_number_of_keys() -> None:
    from ollama_openai_proxy.logs import WarnOnce

    class Spy:
        def __init__(self) -> None:
            self.levels: list[str] = []

        def warning(self, *_: object, **__: object) -> None:
            self.levels.append("warning")

        def debug(self, *_: object, **__: object) -> None:
            self.levels.append("debug")

    spy = Spy()
    warn = WarnOnce(spy)
    warn.MAX_KEYS = 3
    for key in ("a", "a", "b", "c", "d", "e"):
        warn("option_not_sent_upstream", key)
    assert spy.levels == ["warning", "debug", "warning", "warning", "debug", "debug"]
    assert len(warn._seen) == 3
