"""When http1 sends a request again on a new connection (http1.client.resend_reason, RFC 9112
section 9.3.1): the rule as a table. Over loopback servers, the race and a backend that read
and worked: tests/integration/test_http1_conformance.py."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_openai_bridge import http1
from ollama_openai_bridge.http1.client import resend_reason


def closed(*, sent: bool = True, after: float | None = None, reset: bool = False) -> Any:
    return http1.Disconnected("closed", answered=False, sent=sent, after=after, reset=reset)


@pytest.mark.parametrize(
    ("method", "exc", "round_trip", "resend", "reason"),
    [
        (
            "POST",
            closed(sent=False),
            0.0,
            True,
            "nothing of the request was written: the connection was found closed",
        ),
        ("GET", closed(after=30.0), 0.001, True, "GET is idempotent (RFC 9110 §9.2.2)"),
        (
            "POST",
            closed(after=0.001),
            0.0002,
            True,
            "a close 1.0 ms after the request was written, the connection's round trip bound "
            "being 5.2 ms: the close crossed the request, unread",
        ),
        (
            "POST",
            closed(after=0.04, reset=True),
            0.05,
            True,
            "a reset 40.0 ms after the request was written, the connection's round trip bound "
            "being 55.0 ms: the close crossed the request, unread",
        ),
        (
            "POST",
            closed(after=1.0),
            0.0002,
            False,
            "a close 1000.0 ms after the request was written, the connection's round trip bound "
            "being 5.2 ms: the server may have read and acted on the POST (RFC 9112 §9.3.1)",
        ),
        (  # a load balancer's reset after minutes of silence: no proof the request was unread
            "POST",
            closed(after=240.0, reset=True),
            0.0002,
            False,
            "a reset 240000.0 ms after the request was written, the connection's round trip "
            "bound being 5.2 ms: the server may have read and acted on the POST (RFC 9112 §9.3.1)",
        ),
        (  # a handshake slowed by a lost SYN is no round trip: the window is capped
            "POST",
            closed(after=0.6),
            3.0,
            False,
            "a close 600.0 ms after the request was written, the connection's round trip bound "
            "being 255.0 ms: the server may have read and acted on the POST (RFC 9112 §9.3.1)",
        ),
        (
            "POST",
            closed(),
            0.001,
            False,
            "a close at an unknown time: the server may have acted on the POST",
        ),
    ],
    ids=[
        "unsent",
        "idempotent",
        "crossed",
        "reset-within-the-round-trip",
        "after-work",
        "reset-after-minutes",
        "capped-window",
        "unknown",
    ],
)
def test_when_a_request_is_sent_again(
    method: str, exc: http1.Disconnected, round_trip: float, resend: bool, reason: str
) -> None:
    """http1.client.resend_reason: a POST only when the close beat it (RFC 9112 §9.3.1)."""
    assert resend_reason(method, exc, round_trip) == (resend, reason)
