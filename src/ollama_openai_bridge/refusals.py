"""Parameters a backend refused, learned from its 400s and remembered per model a while.

A backend's 400 naming a parameter it does not take (``Unsupported parameter: 'max_tokens'``;
upstream_errors.py reads which) makes exchange.py send the attempt again without it, or under
the name the backend asked for, and learn it here: the next request to the same model is shaped
right at once (policy.py reads what was learned), rather than refused and sent twice every
time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_LEARNED = 1024  # models whose refused parameters an upstream remembers
LEARNED_TTL = 3600.0  # seconds a refusal is remembered: a backend may come to take it

# (endpoint path, reasoning on) -> parameter -> (the name it wants instead or None, expiry)
Learned = dict[tuple[str, bool], dict[str, tuple[str | None, float]]]


class Refusals:
    """Parameters a backend refused, per model id, endpoint and whether the request reasoned
    (gpt-5.1 refuses temperature only while reasoning). Entries expire after
    :data:`LEARNED_TTL` seconds, so a backend that learns a parameter is asked again; at most
    :data:`MAX_LEARNED` models, as clients choose the names."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_model: dict[str, Learned] = {}
        self._clock = clock

    def learn(
        self, model: str, path: str, reasoning: bool, parameter: str, instead: str | None
    ) -> None:
        """``model`` refused ``parameter`` at ``path`` (and wants ``instead``)."""
        by_model = self._by_model
        if model not in by_model and len(by_model) >= MAX_LEARNED:
            del by_model[next(iter(by_model))]
        entry = by_model.setdefault(model, {}).setdefault((path, reasoning), {})
        entry[parameter] = (instead, self._clock() + LEARNED_TTL)

    def get(self, model: str) -> Learned | None:
        """What ``model`` refused and is still remembered (expired entries are dropped)."""
        learned = self._by_model.get(model)
        if learned is None:  # the usual case: nothing refused
            return None
        now = self._clock()
        for key in list(learned):
            kept = {p: v for p, v in learned[key].items() if v[1] > now}
            if kept:
                learned[key] = kept
            else:
                del learned[key]
        if not learned:
            del self._by_model[model]
            return None
        return learned
