"""A purpose-built HTTP/1.1 keep-alive client for the backend calls: asyncio Protocols (uvloop's
when the proxy runs) and httptools' llhttp response parser -- the parts uvicorn is built on.

Why (issue #18, measured on this machine): of the proxy stack's cost, aiohttp's client was most
of it -- about 229 Python calls and 120 us of CPU per request, and 12 us per streamed chunk --
while a minimal client on the same parts cost half of that or less. :class:`Client` does only
what the proxy asks of its backend, and :class:`Response` has exactly the surface of
``aiohttp.ClientResponse`` that upstream.py and exchange.py use (``upstream.UpstreamResponse``),
so both clients run the same code above them. What it does, by RFC 9112 section:

- **Request (§3, §3.2.1).** An origin-form target; ``Host`` (RFC 9110 §7.2) and the fixed
  headers written as bytes once per target, only ``Content-Length`` per request.
- **Response head (§4, RFC 9110 §15.2).** 1xx interim answers (100, 102, 103) are read and
  skipped. A head larger than ``max_head`` bytes (status lines, fields, interim heads) is refused
  as it arrives, before llhttp buffers more of it, or, when it ends in one read with the body's
  first bytes, before the answer is handed on.
- **Body length (§6.3).** ``Content-Length`` (§6.2), chunked (§7.1; trailers, §7.1.2, read and
  dropped, bounded by ``max_head`` as a head is), or the bytes until the server closes (rule 8,
  and rule 4: ``Transfer-Encoding: identity``). A transfer coding that would stay on the body --
  any but chunked, chunked not last (§6.1) -- is refused, never passed on as the content. A
  body cut short -- fewer bytes than its length, no last chunk (§8) -- is an error, never a
  short answer.
- **Content codings (RFC 9110 §8.4).** gzip and deflate (zlib or raw, as servers send both)
  decoded in pieces of at most :data:`DECODED_PIECE` bytes per read: a small body that expands a
  thousandfold never lands in memory whole. A gzip body of several members (RFC 1952 §2.2) is
  decoded member after member; bytes after the end that are no member, or any after a deflate
  stream, fail the body as one that does not decode (never dropped, never a short answer).
  Other codings pass through undecoded, as aiohttp's.
- **Flow control.** Reading from the socket pauses while more than :data:`HIGH_WATER` bytes wait
  for the consumer (a slow client of a fast stream), and the idle timeout does not run then.
  Each waiting piece counts its heap overhead too, and what waits is joined into one piece
  when reading pauses: a stream of 2-byte chunks holds about the mark, not 28 times it.
- **Persistence (§9.3).** A connection goes back to its pool (LIFO, :data:`IDLE_EXPIRY` seconds
  at most, ``limit`` connections in all) once its answer has arrived whole with keep-alive; one
  that saw an error, an answer not read to its end, or a cancelled request is closed, and so is
  one with bytes after its answer, in the same read or while idle (a server out of step). A
  stray answer that comes only after the next request was sent cannot be told from that
  request's answer (aiohttp takes it even while idle).
- **Retrying (§9.3.1).** A server may close an idle connection just as a request is sent on it
  (its keep-alive timer). When a reused connection closes without one byte of an answer, the
  request is sent once more on a new connection if that is safe: a GET (idempotent, RFC 9110
  §9.2.2); a POST only when nothing of it was written, or when the close came within the
  connection's round trip (the kernel's ``TCP_INFO``, plus a few milliseconds) of the write --
  a close that crossed the request, which a server that read it and worked cannot send
  (:func:`.client.resend_reason`, with the measurements). A POST the backend may have acted on
  is never sent again here (a completion is billed, ``store: true`` keeps one each time); the
  failure goes to ``MAX_RETRIES`` in upstream.py. The DEBUG log says why a request was or was
  not sent again.
- **Timeouts (§9.5).** ``connect_timeout`` for the TCP and TLS handshakes; ``read_timeout`` for
  every silence once a request is sent (the first byte and each gap: aiohttp's ``sock_read``);
  a per-request ``timeout`` (seconds in all, the body's reading included). One timer per request,
  moved only when it fires, not per read.
- **TLS (§9.7).** ``ssl.SSLContext`` with certificate and host name verification; the host is
  sent as SNI (RFC 6066 §3; Python sends none for an IP address, as RFC 6066 asks).

Not covered (upstream.client_for keeps aiohttp for them): URLs with credentials, non-ASCII host
names, backends behind an HTTP proxy from the environment (egress.py); ``HEAD`` (llhttp must be
told that its answer has no body, which httptools cannot).

The modules: :mod:`.client` (the pool and requests), :mod:`.connection` (one connection: the
protocol and llhttp's callbacks), :mod:`.response` (an answer's body), :mod:`.errors` (the
failures, all foreign to the proxy and mapped by ``upstream.map_failure``).
"""

from ollama_openai_bridge.http1.client import Client, unsupported
from ollama_openai_bridge.http1.errors import (
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    InvalidResponse,
    ReadTimeout,
    TotalTimeout,
)
from ollama_openai_bridge.http1.response import Origin, Response

__all__ = [
    "Client",
    "ConnectFailed",
    "ConnectTimeout",
    "Disconnected",
    "InvalidResponse",
    "Origin",
    "ReadTimeout",
    "Response",
    "TotalTimeout",
    "unsupported",
]
