"""``/api/generate``'s ``context``: the conversation so far, carried by the client in integers.

Ollama ends every generate answer but a ``raw`` one with ``context``, "an encoding of the
conversation used in this response": the token ids of the prompt it rendered and of the answer
(server/routes.go GenerateHandler, ``r.Tokenize(prompt + response)`` when ``!req.Raw``). A client
that sends them back continues that conversation: Ollama turns them back into text and puts it
before the new prompt. Clients rely on both halves: the Vercel AI SDK's Ollama provider
requires ``context`` in every unstreamed answer (ollama-ai-provider-v2,
``baseOllamaResponseSchema``), and Continue's and LangChain's older LLM classes send it back.

A proxy has no tokenizer, and keeps no state: the integers carry the exchanges themselves --
the system message and each (prompt, answer) pair, compressed -- and a restored context
becomes chat history (system, user, assistant, ..., then the new prompt). A keyed MAC
(HMAC-SHA256, truncated to 128 bits) makes sure a client can only send back what the proxy
issued: a context altered, made by Ollama itself, or issued under another key (another
replica, or before a restart when CONTEXT_SIGNING_KEY is unset) is refused with a 400 asking
for the conversation again, never guessed at.

Layout, in bytes, three to an integer (big-endian, each 0 to 2**24 - 1: read exactly as a JS
number, a float32 or an int32 alike, as token ids are small)::

    byte 0      version (high 6 bits) and the padding's length (low 2 bits)
    bytes 1-16  HMAC-SHA256(key, "ollama-openai-bridge/context" + byte 0 + body)[:16]
    body        zlib(orjson({"s": system, "t": [[prompt, answer], ...]}))
    padding     0 to 2 zero bytes, to a multiple of three

Bounded: an answer's context has at most ``max_ints`` integers (REQUEST_MAX_CONTEXT, within
what a request body may carry back), the oldest exchanges dropped to fit (said in the log) --
if even the newest exchange does not fit, only the system message is carried, and nothing if
that does not fit either; how many fit is found in a few compressions, never one per exchange.
A context read back is checked before it is decompressed, and decompressed within
``max_bytes``.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ollama_openai_bridge.errors import BadRequest

VERSION = 1
MAC_BYTES = 16
_DOMAIN = b"ollama-openai-bridge/context"
_LIMIT = 1 << 24  # each integer carries three bytes
_HEADER = 1 + MAC_BYTES

INVALID = (
    "invalid context: this proxy did not issue it, or it was altered, or it was issued before "
    "the proxy restarted or by another instance (unless they share CONTEXT_SIGNING_KEY); send "
    "the request again without it, with the conversation in the prompt or as /api/chat messages"
)


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a context carries: the system message and the (prompt, answer) exchanges, oldest
    first."""

    system: str | None = None
    turns: tuple[tuple[str, str], ...] = ()

    def then(self, system: str | None, prompt: str, answer: str) -> Conversation:
        """This conversation and one more exchange (a new ``system`` replaces the old one)."""
        return Conversation(system or self.system, (*self.turns, (prompt, answer)))

    def messages(self) -> list[dict[str, Any]]:
        """The exchanges as OpenAI chat messages (the caller adds the system message)."""
        out: list[dict[str, Any]] = []
        for prompt, answer in self.turns:
            out.append({"role": "user", "content": prompt})
            out.append({"role": "assistant", "content": answer})
        return out


class ContextCodec:
    """Issues and reads back contexts under one key. ``key``: the signing secret (any length;
    a fresh random one when the operator sets none); ``max_ints``: the most integers an answer's
    context may have; ``max_bytes``: the most a context may decompress to."""

    __slots__ = ("_key", "max_bytes", "max_ints")

    def __init__(self, key: bytes, max_ints: int, max_bytes: int) -> None:
        # The MAC's own key, derived from the secret: the secret is never used as is.
        self._key = hmac.new(key, _DOMAIN, hashlib.sha256).digest()
        self.max_ints = max_ints
        self.max_bytes = max_bytes

    def _mac(self, header: int, body: bytes) -> bytes:
        msg = _DOMAIN + bytes((header,)) + body
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:MAC_BYTES]

    def _pack(self, conversation: Conversation) -> list[int]:
        payload: dict[str, Any] = {"t": [list(t) for t in conversation.turns]}
        if conversation.system:
            payload["s"] = conversation.system
        body = zlib.compress(orjson.dumps(payload), 6)
        pad = -(_HEADER + len(body)) % 3
        header = VERSION << 2 | pad
        data = bytes((header,)) + self._mac(header, body) + body + bytes(pad)
        return [int.from_bytes(data[i : i + 3], "big") for i in range(0, len(data), 3)]

    def encode(self, conversation: Conversation, notes: list[str]) -> list[int]:
        """``conversation`` as a context of at most :attr:`max_ints` integers: the newest
        exchanges that fit, the oldest dropped (noted); only the system message if even the
        newest exchange does not fit, and no context (``[]``) if the system message alone does
        not. How many to keep is found by bisection: at most ``log2(len(turns)) + 3``
        compressions whatever the sizes (dropping one exchange at a time recompressed the
        conversation once per exchange dropped: minutes of event loop for a long history and a
        prompt too large to keep, review of #17)."""
        ints = self._pack(conversation)
        turns = conversation.turns
        if len(ints) <= self.max_ints or not turns:
            return ints if len(ints) <= self.max_ints else self._dropped(turns, 0, [], notes)

        def packed(keep: int) -> list[int]:
            kept = turns[len(turns) - keep :] if keep else ()
            return self._pack(Conversation(conversation.system, kept))

        # The newest exchange alone decides whether any can be kept: one compression.
        best = packed(1)
        if len(best) > self.max_ints:
            return self._dropped(turns, 0, packed(0), notes)
        # Keeping ``lo`` exchanges fits, keeping ``hi`` does not. Compressed sizes are nearly
        # proportional: the first guess is near the answer, then halve what is left.
        lo, hi = 1, len(turns)
        guess = len(turns) * self.max_ints // len(ints)
        while hi - lo > 1:
            mid = guess if lo < guess < hi else (lo + hi) // 2
            guess = 0
            candidate = packed(mid)
            if len(candidate) <= self.max_ints:
                lo, best = mid, candidate
            else:
                hi = mid
        return self._dropped(turns, lo, best, notes)

    def _dropped(
        self, turns: tuple[tuple[str, str], ...], keep: int, ints: list[int], notes: list[str]
    ) -> list[int]:
        fits = len(ints) <= self.max_ints
        notes.append(
            f"generate context: {len(turns) - keep} earliest exchange(s) dropped"
            f"{'' if fits else ', and the system message does not fit either: no context'}"
            f" to stay within {self.max_ints} integers (REQUEST_MAX_CONTEXT)"
        )
        return ints if fits else []

    def decode(self, ints: Sequence[int] | None) -> Conversation:
        """The conversation a context sent back carries; an empty or absent one is none.
        Raises BadRequest (``param`` context) for anything this proxy did not issue under its
        key, before decompressing it."""
        if not ints:
            return Conversation()
        try:
            data = b"".join(v.to_bytes(3, "big") for v in ints)
        except OverflowError:  # negative, or beyond three bytes: not an integer it issued
            raise BadRequest(INVALID, param="context") from None
        header = data[0]
        pad = header & 3
        body = data[_HEADER : len(data) - pad]
        if (
            len(data) < _HEADER + pad
            or header >> 2 != VERSION
            or any(data[len(data) - pad :])
            or not hmac.compare_digest(data[1:_HEADER], self._mac(header, body))
        ):
            raise BadRequest(INVALID, param="context")
        return _read(body, self.max_bytes)


def _read(body: bytes, max_bytes: int) -> Conversation:
    """A verified body: the proxy wrote it, so a failure here is a bug or a key shared with
    something else; still a 400, never a 500."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(body, max_bytes)
        if inflater.unconsumed_tail or not inflater.eof:
            raise BadRequest(
                f"context too large: more than {max_bytes} bytes of conversation "
                "(REQUEST_MAX_SIZE); send the conversation again without it",
                param="context",
            )
        payload = orjson.loads(raw)
        turns = tuple((str(p), str(a)) for p, a in payload["t"])
        system = payload.get("s")
        return Conversation(system if isinstance(system, str) else None, turns)
    except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise BadRequest(INVALID, param="context") from None
