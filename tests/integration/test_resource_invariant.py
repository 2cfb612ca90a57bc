"""Every bounded resource comes back, on every route, however a request ends.

For each route of the app's own route table (so a new route is covered without editing this
file), the real app, served over a loopback socket with two concurrency slots and no queue,
answers 50 requests taken from its own OpenAPI document; the routes that call the backend also
meet its faults: an error status (4xx, 5xx), an error event inside a stream, a connection dropped
in the middle, a malformed chunk, and a client that hangs up before or after the first line.
Afterwards a normal request of every backend-calling family still succeeds, no backend call is
in flight (the ``ollama_proxy_upstream_requests_in_flight`` gauge) and no slot is taken
(``limiter.active``). Along the way nothing may answer 500, and no connection may be cut without
a complete answer, except by the client itself on purpose.

Each route gets a proxy of its own, so a leak is blamed on the route that leaked. The faults come
from tests/fake_upstream.py: a request whose model is one of the faults' meets that fault (the
body-less GET /v1/models gets it by path, for its turn). FAMILIES below is the one list to keep:
the routes that call the backend and meet the faults.

A route whose request cannot be built from the OpenAPI document (a path parameter or a request
body without an example) fails here: add the example, in
src/ollama_openai_bridge/openapi/operations.py or the route's ``openapi_extra``.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ollama_openai_bridge.app import create_app
from ollama_openai_bridge.resilience import ConcurrencyLimiter
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

LIMITS: dict[str, Any] = {
    "max_concurrent_requests": 2,
    "max_queued_requests": 0,  # a taken slot shows at once: the next request past two gets 503
    "queue_timeout": 1,
    "max_retries": 0,
    "enable_metrics": True,
}
ROUNDS = 50
IN_FLIGHT = "ollama_proxy_upstream_requests_in_flight"
REQUESTS = "ollama_proxy_requests_total"  # requests the proxy has finished (its access log's)
SETTLE = 2.0  # seconds, at most, for the asynchronous cleanup after a client left
GRACE = 0.25  # seconds of waiting on once proxy and backend are idle: what is left stays
TIMEOUT = 10.0

# The backend-calling families, and whether their answer can stream (the body's ``stream``).
FAMILIES: dict[tuple[str, str], bool] = {
    ("POST", "/api/chat"): True,
    ("POST", "/api/generate"): True,
    ("POST", "/api/embed"): False,
    ("POST", "/api/embeddings"): False,
    ("POST", "/v1/chat/completions"): True,
    ("POST", "/v1/completions"): True,
    ("POST", "/v1/embeddings"): False,
    ("POST", "/v1/responses"): True,
    ("GET", "/v1/models"): False,
    ("POST", "/v1/messages"): True,
}

# Routes of a feature that is off by default, and the settings that turn it on for their proxy
# (its key is then sent with every request of that run).
FEATURES: dict[str, dict[str, Any]] = {
    "/v1/usage": {"proxy_api_keys": "invariant-key-0123", "token_budget": "1000000000/day"},
}

# --- the app's own routes and requests ----------------------------------------------------------

_APP = create_app(settings_for("http://127.0.0.1:9/v1", **LIMITS))  # never started: read only
DOC: dict[str, Any] = _APP.openapi()


def route_table() -> list[tuple[str, str]]:
    """(method, path) of every HTTP route, the hot routes included (they are in the app's
    route table too)."""
    found: set[tuple[str, str]] = set()
    for route in _APP.routes:
        path, methods = getattr(route, "path_format", None), getattr(route, "methods", None)
        if isinstance(path, str) and methods:
            found.update((method, path) for method in methods)
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = route_table()


class NoExample(Exception):
    pass


def _example(node: dict[str, Any]) -> Any:
    if "example" in node:
        return node["example"]
    examples = node.get("examples")
    if isinstance(examples, list) and examples:
        return examples[0]
    if isinstance(examples, dict) and examples:
        return next(iter(examples.values())).get("value")
    return None


def operation(method: str, path: str) -> dict[str, Any] | None:
    item = DOC["paths"].get(path, {})
    op: dict[str, Any] | None = item.get(method.lower())
    if op is None and method == "HEAD":
        op = item.get("get")  # HEAD twins of GET operations stay out of the document
    return op


def concrete_path(method: str, path: str) -> str:
    """``path`` with each parameter replaced by its documented example."""
    for name in re.findall(r"{([^}]+)}", path):
        value = None
        for op in DOC["paths"].get(path, {}).values():
            for param in op.get("parameters", ()):
                if param.get("in") == "path" and param.get("name") == name:
                    value = _example(param)
                    if value is None:
                        value = _example(param.get("schema", {}))
        if value is None:
            raise NoExample(
                f"{method} {path}: the path parameter {{{name}}} has no example in the OpenAPI "
                "document, so this test cannot call the route. Add one (e.g. a `parameters` "
                "entry with an `example` in src/ollama_openai_bridge/openapi/operations.py, or "
                "the route's openapi_extra)."
            )
        path = path.replace("{" + name + "}", quote(str(value), safe=":"))
    return path


def request_body(method: str, path: str) -> dict[str, Any] | None:
    """The documented request example; None for an operation that takes no body."""
    op = operation(method, path)
    if op is None:
        if method in ("GET", "HEAD"):
            return None  # the docs pages and the metrics' second path: nothing to send
        raise NoExample(
            f"{method} {path} is not in the OpenAPI document, so this test has no request for "
            "it. Document it, with a request example (src/ollama_openai_bridge/openapi/)."
        )
    if "requestBody" not in op:
        return None
    content = op["requestBody"].get("content", {}).get("application/json", {})
    example = _example(content)
    if example is None:
        example = _example(content.get("schema", {}))
    if not isinstance(example, dict):
        raise NoExample(
            f"{method} {path} ({op.get('operationId')}) documents a request body without an "
            "example; add a `request` example in src/ollama_openai_bridge/openapi/operations.py."
        )
    return example


def documented(method: str, path: str) -> set[int] | None:
    """The statuses the route may answer a normal request with: its operation's, or those of
    the operations on its path (HEAD /api/blobs/{digest}); None if undocumented (2xx then)."""
    op = operation(method, path)
    ops = [op] if op is not None else list(DOC["paths"].get(path, {}).values())
    if not ops:
        return None
    statuses = {int(s) for o in ops for s in o["responses"]}
    if any(200 <= s < 300 for s in statuses):
        return None  # it succeeds when asked as documented
    return statuses  # it never succeeds (the 501 of the model-management routes)


def variant(body: dict[str, Any] | None, stream: bool | None, model: str | None = None) -> Any:
    if body is None:
        return None
    out = dict(body)
    if stream is not None:
        out["stream"] = stream
    if model is not None:
        out["model"] = model
    return out


def streams(method: str, path: str, body: dict[str, Any] | None) -> list[bool | None]:
    if body is not None and ("stream" in body or FAMILIES.get((method, path), False)):
        return [False, True]
    return [None]


def label(stream: bool | None) -> str:
    return {None: "", False: " (not streamed)", True: " (streamed)"}[stream]


# --- the faults ---------------------------------------------------------------------------------

MALFORMED = '{"choices":["x"]}'
SLOW = [{"content": "Hi"}] + [{"content": "."}] * 8  # with delay=0.05: half a second
ERROR_EVENT = '{"error":{"message":"overloaded (fault)","type":"server_error"}}'


@dataclass(frozen=True)
class Fault:
    name: str
    script: Script
    streamed_only: bool = False
    disconnect: str | None = None  # the client hangs up "before" or "after" the first line

    @property
    def model(self) -> str:
        return "fault-" + re.sub(r"[^a-z0-9]+", "-", self.name)


FAULTS = [
    Fault("backend 4xx", Script(status=400)),
    # 503, not 500: /v1 passes a backend's status on, and a 500 here must mean the proxy's own.
    Fault("backend 5xx", Script(status=503)),
    Fault(
        "error event mid-stream",
        Script(chunks=[{"content": "Hi"}, ERROR_EVENT], finish_reason=None, done_marker=False),
        streamed_only=True,
    ),
    Fault(
        "connection dropped mid-answer",
        Script(chunks=[{"content": "Hi"}, {"content": "!"}], drop_after=2, truncate_body=True),
    ),
    Fault(
        "malformed chunk before the first line",
        Script(chunks=[MALFORMED], json_body={"object": "list", "data": ["x"], "choices": ["x"]}),
    ),
    Fault(
        "malformed chunk after the first line",
        Script(chunks=[{"content": "Hi"}, MALFORMED]),
        streamed_only=True,
    ),
    Fault(
        "client gone before the first line",
        Script(first_delay=0.2, chunks=SLOW, delay=0.05),
        disconnect="before",
    ),
    Fault(
        "client gone after the first line",
        Script(chunks=SLOW, delay=0.05),
        streamed_only=True,
        disconnect="after",
    ),
]


def for_model(model: str) -> Callable[[str, Any], bool]:
    def accepts(_path: str, body: Any) -> bool:
        return isinstance(body, dict) and body.get("model") == model

    return accepts


def for_path(path: str) -> Callable[[str, Any], bool]:
    # A body-less request (GET /v1/models) reaches the backend at the same path.
    def accepts(sent_path: str, _body: Any) -> bool:
        return sent_path == path

    return accepts


@pytest.fixture(scope="module")
def backend() -> Iterator[FakeUpstream]:
    """The fake backend, serving every model the request examples name; a request for one of
    the faults' models meets that fault."""
    models = set()
    for item in DOC["paths"].values():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            example = _example(content)
            if isinstance(example, dict) and isinstance(example.get("model"), str):
                models.add(example["model"])
    fake = FakeUpstream(models=sorted(models | {f.model for f in FAULTS}))
    fake.faults = [(for_model(f.model), f.script) for f in FAULTS]
    fake.start()
    yield fake
    fake.stop()


# --- one run against one proxy ------------------------------------------------------------------


class Run:
    def __init__(self, server: ProxyServer, fake: FakeUpstream, key: str | None = None) -> None:
        self.server = server
        self.fake = fake
        auth = {"Authorization": f"Bearer {key}"} if key else None
        self.client = httpx.Client(base_url=server.url, timeout=TIMEOUT, headers=auth)
        self.problems: dict[str, list[str]] = {}
        self.sent = 0  # requests sent to the proxy

    @property
    def limiter(self) -> ConcurrencyLimiter:
        limiter: ConcurrencyLimiter = self.server.app.state.ctx.limiter
        return limiter

    def note(self, problem: str, where: str) -> None:
        self.problems.setdefault(problem, []).append(where)

    def report(self) -> str:
        lines = []
        for problem, wheres in self.problems.items():
            shown = ", ".join(wheres[:12]) + (", ..." if len(wheres) > 12 else "")
            lines.append(f"- {problem}\n    {len(wheres)}x: {shown}")
        return "\n".join(lines)

    def request(
        self, method: str, path: str, body: Any, where: str, *, alone: bool = False
    ) -> tuple[int | None, str]:
        """One request, its answer read to the end; a 500 or a cut connection is noted.
        ``alone``: on a connection of its own, so that whatever becomes of the connection
        afterwards is not blamed on the next request."""
        status: int | None = None
        self.sent += 1
        headers = {"Connection": "close"} if alone else None
        try:
            with self.client.stream(method, path, json=body, headers=headers) as r:
                status = r.status_code
                text = r.read().decode("utf-8", "replace")
        except httpx.TimeoutException:
            self.note(f"{method} {path}: no complete answer within {TIMEOUT:g} s", where)
            return None, ""
        except httpx.TransportError as exc:
            when = "without an answer" if status is None else f"after status {status}"
            self.note(
                f"{method} {path}: connection cut {when} ({type(exc).__name__}: {exc})", where
            )
            return None, ""
        if status == 500:
            self.note(f"{method} {path}: answered 500: {text[:160]}", where)
        return status, text

    def hang_up(
        self, method: str, path: str, body: Any, after_first_line: bool, where: str
    ) -> None:
        """Send the request on a raw socket and close it: as soon as the backend has the call
        (or the proxy answered first), or once the first line of the answer arrived."""
        data = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        seen, before = len(self.fake.journal), self.limiter.active
        self.sent += 1
        got = b""
        deadline = time.monotonic() + SETTLE
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=TIMEOUT) as s:
            s.sendall(head.encode() + data)
            while time.monotonic() < deadline:
                if not after_first_line and len(self.fake.journal) > seen:
                    break  # the backend call is in flight
                if after_first_line and _first_line(got):
                    break
                if select.select([s], [], [], 0.01)[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    if not after_first_line:
                        break  # the proxy answered before the backend was called
        if got.startswith(b"HTTP/1.1 500"):
            self.note(f"{method} {path}: answered 500: {got[:300]!r}", where)
        # The client is gone; its slot must come back (asynchronously).
        self.wait(lambda: self.limiter.active <= before)
        if self.limiter.active > before:
            self.note(
                f"{method} {path}: a concurrency slot still taken after the client hung up, "
                "proxy and backend idle",
                where,
            )

    def scrape(self) -> tuple[float | None, float | None]:
        """The in-flight gauge and the count of requests the proxy has finished (None if
        absent), from GET /v1/metrics."""
        self.sent += 1
        r = self.client.get("/v1/metrics")
        gauge = ended = None
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                if sample.name == IN_FLIGHT:
                    gauge = (gauge or 0) + sample.value
                elif sample.name == REQUESTS:
                    ended = (ended or 0) + sample.value
        return gauge, ended

    def idle(self) -> bool:
        """The proxy has finished every request it got, and the backend every call: nothing is
        left to clean up (but what a finished request left behind)."""
        _, ended = self.scrape()
        return ended is not None and ended >= self.sent - 1 and self.fake.in_progress == 0

    def wait(self, done: Callable[[], bool]) -> None:
        """Poll until ``done()``: for SETTLE seconds at most, and for GRACE seconds once all is
        idle (a leak does not cost the whole SETTLE)."""
        start, quiet = time.monotonic(), 0.0
        while not done():
            now = time.monotonic()
            if now - start > SETTLE or (quiet and now - quiet > GRACE):
                return
            if not quiet and self.idle():
                quiet = now
            time.sleep(0.02)

    def check(self, when: str) -> None:
        """No backend call in flight (the gauge), no slot taken (the limiter)."""
        gauge: float | None = None
        active = 0

        def zero() -> bool:
            nonlocal gauge, active
            gauge, _ = self.scrape()
            active = self.limiter.active
            return active == 0 and gauge in (None, 0)

        self.wait(zero)
        if gauge is None:
            self.note(f"GET /v1/metrics has no {IN_FLIGHT} gauge", when)
        elif gauge != 0:
            self.note(f"{IN_FLIGHT} reads {gauge:g}, not 0", when)
        if active != 0:
            self.note(f"limiter.active is {active}, not 0", when)


def _first_line(got: bytes) -> bool:
    head, sep, body = got.partition(b"\r\n\r\n")
    if not sep:
        return False
    if b"transfer-encoding: chunked" not in head.lower():
        return True  # not a stream (an error answer): nothing more to wait for
    return b"\n\r\n" in body  # a chunk ending a line (NDJSON) or an event (SSE)


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_request_gives_back_what_it_took(
    backend: FakeUpstream, method: str, path: str
) -> None:
    try:
        url = concrete_path(method, path)
        body = request_body(method, path)
        families = {key: request_body(*key) for key in FAMILIES}
    except NoExample as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)
    allowed = documented(method, path)

    feature = FEATURES.get(path, {})
    with ProxyServer(settings_for(backend.url, **LIMITS, **feature)) as server:
        run = Run(server, backend, feature.get("proxy_api_keys"))
        with run.client:
            # 1. Requests in turn, as documented.
            variants = streams(method, path, body)
            for i in range(ROUNDS):
                stream = variants[i % len(variants)]
                where = f"#{i + 1}{label(stream)}"
                status, text = run.request(method, url, variant(body, stream), where)
                if status is None:
                    continue
                if allowed is None and not 200 <= status < 300:
                    run.note(f"{method} {url}{label(stream)}: {status}: {text[:160]}", where)
                elif allowed is not None and status not in allowed:
                    run.note(f"{method} {url}: undocumented {status}: {text[:160]}", where)

            # 2. The backend's faults, and clients that hang up.
            if (method, path) in FAMILIES:
                for fault in FAULTS:
                    for stream in streams(method, path, body):
                        if fault.streamed_only and not stream:
                            continue
                        where = f"{fault.name}{label(stream)}"
                        # A body's model picks the fault; a body-less GET gets it for its turn.
                        sent = variant(body, stream, fault.model)
                        by_path = (for_path(url), fault.script)
                        if body is None:
                            backend.faults.insert(0, by_path)
                        try:
                            if fault.disconnect is None:
                                run.request(method, url, sent, where, alone=True)
                            else:
                                after = fault.disconnect == "after"
                                run.hang_up(method, url, sent, after, where)
                        finally:
                            if body is None:
                                backend.faults.remove(by_path)

            # 3. Afterwards: nothing in flight, no slot taken; every family still answers, and
            # gives back what it took too.
            run.check("after this route's requests")
            for (f_method, f_path), f_body in families.items():
                for stream in streams(f_method, f_path, f_body):
                    where = f"afterwards: {f_method} {f_path}{label(stream)}"
                    status, text = run.request(f_method, f_path, variant(f_body, stream), where)
                    if status is not None and not 200 <= status < 300:
                        run.note(f"afterwards, a normal request: {status}: {text[:160]}", where)
            run.check("after a request of every family too")

    assert not run.problems, f"{method} {path}:\n{run.report()}"
