"""The upstreams at run time: one ``Upstream`` (pool, breaker) and one model list per backend,
which upstream serves a model, and the chain to fall back along.

With the default single upstream every model goes to it, as before. With ``UPSTREAMS_FILE``:

1. ``upstream:model`` addresses one upstream explicitly (when ``upstream`` is one's name);
2. an alias of the file names its upstream and model;
3. otherwise the first upstream, in file order, whose ``models`` globs match a model its
   ``/v1/models`` lists; failing that, the first whose globs match the name; else the first.

A model (or alias) with a ``fallbacks`` chain is sent along that chain instead, in its order (an
alias's own upstream first if the chain leaves it out): the next upstream is tried when the one
before fails before anything reached the client (connection error, timeout, 5xx, 429, or its
circuit breaker open). Model lists are merged for ``/api/tags`` and ``/v1/models``, refreshed in
the background; an upstream that is down keeps its last list and never fails the listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NamedTuple

import structlog

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.catalog import Catalog
from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.errors import ProxyError, echo
from ollama_openai_bridge.exchange import EventStream, Plan, Reply, Route, execute
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.model_map import ModelMap, resolve
from ollama_openai_bridge.owner import Owner
from ollama_openai_bridge.policy import Policy
from ollama_openai_bridge.resilience import CircuitBreaker
from ollama_openai_bridge.topology import Topology
from ollama_openai_bridge.tracing import Tracing
from ollama_openai_bridge.upstream import Upstream

log = structlog.get_logger("ollama_openai_bridge.backends")

RESOLVE_LIST_WAIT = 2.0  # seconds a request waits for a model list that has not arrived yet
RESOLVED_CACHE = 4096  # resolutions kept (a new list, or more names than this, starts over)


class Resolved(NamedTuple):
    """A client's model name, resolved once: the routes to try, in order, and whether the name
    is known (the model map names it or a backend lists its id), which makes it a bounded
    metric label."""

    name: str
    routes: tuple[Route, ...]
    known: bool

    @property
    def route(self) -> Route:
        """The first route: where the request goes unless it falls back."""
        return self.routes[0]


def _globs(patterns: tuple[str, ...] | None) -> re.Pattern[str] | None:
    if patterns is None:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class Backends:
    def __init__(
        self,
        topology: Topology,
        settings: Settings,
        model_map: ModelMap,
        policy: Policy,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.topology = topology
        self.tracing = tracing
        self.model_map = model_map
        self.upstreams: dict[str, Upstream] = {}
        self.catalogs: dict[str, Catalog] = {}
        self._policies: dict[str, Policy] = {}
        self._globs: dict[str, re.Pattern[str] | None] = {}
        for spec in topology.upstreams:
            upstream = Upstream(settings, spec, CircuitBreaker.from_settings(settings), metrics)
            self.upstreams[spec.name] = upstream
            self.catalogs[spec.name] = Catalog(upstream, settings.models_cache_ttl)
            profile = upstream.profile
            # Ollama options: what the backend takes natively (its profile), then what the
            # operator forwards (PASSTHROUGH_OPTIONS, extra_params), which wins.
            extra = {p: p for p in spec.extra_params}
            self._policies[spec.name] = dataclasses.replace(
                policy,
                passthrough={**profile.options, **policy.passthrough, **extra},
                profile=profile,
                extra_body=spec.extra_body,
                max_output_tokens=spec.max_output_tokens or policy.max_output_tokens,
            )
            self._globs[spec.name] = _globs(spec.models)
            if metrics is not None:
                metrics.breaker_state(spec.name, 0)
        self.default = next(iter(self.upstreams.values()))
        # For requests that name no model (the OpenAI API's bodies we do not decode).
        self.default_route = Route(self.default, "", self._policies[self.default.name])
        self.multi = topology.from_file
        self._ttl = settings.models_cache_ttl
        # Run a plan (exchange.execute) with this app's timeouts and metrics; bound once, so a
        # request pays for no extra coroutine frame.
        self.execute: Callable[[Plan, Owner, AccessRecord], Awaitable[Reply | EventStream]] = (
            partial(
                execute,
                first_byte_timeout=settings.first_byte_timeout,
                stream_timeout=settings.stream_timeout,
                metrics=metrics,
                tracing=tracing,
            )
        )
        # Derived from the lists, rebuilt only when one of them changed (keyed by their versions).
        self._known: tuple[tuple[int, ...], frozenset[str] | None] = ((), None)
        self._merged: tuple[tuple[int, ...], list[dict[str, Any]]] = ((), [])
        self._refresher: asyncio.Task[None] | None = None
        # name -> (the known ids it was resolved against, the resolution)
        self._resolved: dict[str, tuple[frozenset[str], Resolved]] = {}

    def policy(self, name: str) -> Policy:
        """The translation policy of the upstream called ``name`` (its backend profile)."""
        return self._policies[name]

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.start(self.tracing)
        if self.multi and self._ttl > 0:
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def warm_up(self, wait: float) -> None:
        """Fetch the model lists at start, waiting up to ``wait`` seconds: names are resolved
        against them, so the first requests should find them. A list that takes longer goes on
        loading in the background (the first request that needs it joins the fetch); one that
        fails is logged and fetched again later."""
        fetch = asyncio.ensure_future(self.models())
        done, _ = await asyncio.wait((fetch,), timeout=wait)
        if not done:
            log.warning("models_list_slow", detail=f"no model list within {wait:g} s of start")
        elif (exc := fetch.exception()) is not None:
            error = exc.message if isinstance(exc, ProxyError) else repr(exc)
            log.warning("models_unavailable_at_start", error=error)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for upstream in self.upstreams.values():
            await upstream.close()

    async def _refresh_forever(self) -> None:
        # Lists are fetched at start and whenever they expire, so a request rarely waits for one.
        while True:
            await asyncio.gather(
                *(c.models() for c in self.catalogs.values()), return_exceptions=True
            )
            await asyncio.sleep(self._ttl)

    # --- routing ----------------------------------------------------------------------------

    def _route(self, name: str, model: str) -> Route:
        return Route(self.upstreams[name], model, self._policies[name])

    def _serves(self, name: str, model: str) -> bool:
        glob = self._globs[name]
        return glob is None or glob.match(model) is not None

    def routes(self, name: str) -> list[Route]:
        """Where a request for the client's model ``name`` goes, in the order to try."""
        if not self.multi:
            catalog = self.catalogs[self.default.name]
            model = resolve(name, self.model_map, catalog.known_ids)
            return [Route(self.default, model, self._policies[self.default.name])]
        prefix, sep, rest = name.partition(":")
        if sep and rest and prefix in self.upstreams:
            return [self._route(prefix, rest)]  # explicit: that upstream only
        aliases = self.topology.aliases
        alias = aliases.get(name) or (
            aliases.get(name.removesuffix(":latest")) if name.endswith(":latest") else None
        )
        model = alias[1] if alias is not None else resolve(name, self.model_map, self.known_ids)
        chain = self.topology.fallbacks.get(name) or self.topology.fallbacks.get(model) or ()
        if alias is not None:
            # the alias's own upstream first, unless its chain places it
            first = [] if alias[0] in chain else [self._route(*alias)]
            return first + [self._route(up, model) for up in chain]
        if chain:  # the operator's order is the order
            return [self._route(up, model) for up in chain]
        return [self._route(self._choose(model), model)]

    def _choose(self, model: str) -> str:
        matching = [n for n in self.upstreams if self._serves(n, model)]
        for n in matching:
            known = self.catalogs[n].known_ids
            if known is not None and model in known:
                return n
        return matching[0] if matching else self.default.name

    async def resolve(self, name: str) -> Resolved:
        """Where a request for the client's model ``name`` goes, in the order to try, resolved
        against the model lists: the first request after start waits for them (once, shared,
        at most :data:`RESOLVE_LIST_WAIT` s), so ``x:latest`` finds an id that really ends in
        ``:latest``. If no list can be had, the name is resolved without one (and that is
        logged). Resolutions are kept until a list changes (at most :data:`RESOLVED_CACHE`)."""
        known = self.known_ids
        if known is None:
            try:
                # Bounded: a slow /v1/models must not hold requests outside every timeout;
                # the fetch goes on (shielded, catalog.py) for the requests that follow.
                await asyncio.wait_for(self.models(), RESOLVE_LIST_WAIT)
            except TimeoutError:
                log.warning(
                    "models_list_slow_for_routing", model=echo(name), waited_s=RESOLVE_LIST_WAIT
                )
            except ProxyError as exc:
                log.warning("models_unavailable_for_routing", model=echo(name), error=exc.message)
            known = self.known_ids
        cached = self._resolved.get(name)
        if cached is not None and cached[0] is known:  # the same lists: the same answer
            return cached[1]
        routes = tuple(self.routes(name))
        resolved = Resolved(
            name,
            routes,
            self.model_map.lookup(name) is not None
            or (known is not None and routes[0].model in known),
        )
        if known is not None:
            if len(self._resolved) >= RESOLVED_CACHE:
                self._resolved.clear()
            self._resolved[name] = (known, resolved)
        return resolved

    # --- model lists ------------------------------------------------------------------------

    @property
    def known_ids(self) -> frozenset[str] | None:
        """Every id some upstream lists (and its globs allow), without I/O; None before any
        list arrived."""
        if not self.multi:
            return self.catalogs[self.default.name].known_ids
        versions = tuple(c.version for c in self.catalogs.values())
        if self._known[0] != versions:
            ids: set[str] = set()
            seen = False
            for n, catalog in self.catalogs.items():
                known = catalog.known_ids
                if known is not None:
                    seen = True
                    ids.update(m for m in known if self._serves(n, m))
            self._known = (versions, frozenset(ids) | set(self.topology.aliases) if seen else None)
        return self._known[1]

    def entry(self, route: Route) -> dict[str, Any] | None:
        return self.catalogs[route.upstream.name].entry(route.model)

    def output_limit(self, route: Route) -> int | None:
        """The most output tokens the route's model allows, as its backend's model list says."""
        return self.catalogs[route.upstream.name].output_limit(route.model)

    async def models(self) -> dict[str, Any]:
        """One ``/v1/models`` body for all upstreams (first upstream wins a shared id), with the
        file's aliases. Raises only when no upstream has ever answered."""
        if not self.multi:
            return await self.catalogs[self.default.name].models()
        names = list(self.catalogs)
        results = await asyncio.gather(
            *(self.catalogs[n].models() for n in names), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for n, result in zip(names, results, strict=True):
            if isinstance(result, ProxyError):
                log.warning("models_unavailable", upstream=n, error=result.message)
            elif isinstance(result, BaseException):
                raise result
        if len(failures) == len(results):
            raise failures[0]
        versions = tuple(c.version for c in self.catalogs.values())
        if self._merged[0] != versions:
            self._merged = (versions, self._merge())
        data = self._merged[1]
        return {"object": "list", "data": data}

    def _merge(self) -> list[dict[str, Any]]:
        """Every list (the first upstream wins a shared id, its globs decide), then aliases."""
        data: list[dict[str, Any]] = []
        seen: set[str] = set()
        for n, catalog in self.catalogs.items():
            for model_id in catalog.ids_in_order():
                if model_id not in seen and self._serves(n, model_id):
                    seen.add(model_id)
                    entry = catalog.entry(model_id)
                    assert entry is not None
                    data.append(entry)
        for alias, (up, model) in self.topology.aliases.items():
            if alias not in seen:
                target = self.catalogs[up].entry(model) or {}
                data.append(
                    {
                        "id": alias,
                        "object": "model",
                        "created": target.get("created", 0),
                        "owned_by": up,
                    }
                )
        return data
