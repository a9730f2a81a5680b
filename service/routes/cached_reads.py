"""The leaderboard and trial pages, answered before FastAPI's routing: from the cache, or built and cached.

Under load nearly every leaderboard or trial-page request is a cache hit (routes/cache.py), and for
a hit FastAPI's own work was most of the request: in-process, 0.44 ms of CPU per trial page, of
which matching the route and solving its dependencies (token, rate limit, query) was over half and
the route itself under a tenth. :class:`CachedReads` answers such a request itself, doing exactly
the checks FastAPI would have done, with the same functions:

- a GET of a registered path (:data:`CACHED_READS`; each route module registers its own);
- the token (:func:`auth.principal_for`);
- the query, validated by the route's own query model;
- ownership, by the route's own check (someone else's experiment is not answered here);
- the rate limit, one token per request as the route's dependency takes;
- then the route's own answer (:meth:`CachedRead.answer`): the cached body at the table's current
  version, else one built now and cached.

A hit now costs 0.14 ms in-process, and a trial page built on a miss 3.4-3.7 ms instead of 4.5
(``bench/api_load.py`` gives the end-to-end figures). When a check does not pass (no token, a bad
query, a 404, a 429) the request goes on to FastAPI untouched, which answers it as always; the route
calls the same :meth:`CachedRead.answer`. So this layer only ever sends an answer the route would
have sent, and never an error of its own; ``tests/test_api_cache.py`` sends the same requests with
and without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, Response
from pydantic import BaseModel, ValidationError

from search_spaces.errors import GeonasError

from ..auth import Principal, ScopedStore, principal_for, scoped_store
from ..limits import rate_key

__all__ = ["CachedRead", "CACHED_READS", "cached_read", "CachedReads"]


@dataclass(frozen=True)
class CachedRead:
    """A GET route whose answer is cached on a table's write version.

    ``path`` is the route's template (the metrics label it so); ``key(principal, path_params, query)``
    its cache key; ``build(store, path_params, query)`` its answer's JSON when not cached;
    ``check(store, path_params)`` raises what the route raises (NotFound) before it answers.
    """

    path: str
    query: type[BaseModel]
    key: Callable[[Principal, dict[str, str], Any], Hashable]
    build: Callable[[ScopedStore, dict[str, str], Any], bytes]
    check: Callable[[ScopedStore, dict[str, str]], None] | None = None
    table: str = "trials"
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        object.__setattr__(self, "pattern", re.compile(regex))

    def answer(self, state: Any, store: ScopedStore, params: dict[str, str], query: Any) -> bytes:
        """The JSON answer (after :attr:`check`): cached at the table's current version, else built.

        On the event loop, by the route or :class:`CachedReads`: a known owner and a fresh version
        cost no query, and a miss is built inline, which under load beat the thread pool (cache.py).
        """
        version = state.version_clock.current(self.table)  # before the build: an entry is never older than its key
        return state.response_cache.get_or_build(
            self.key(store.principal, params, query), version, lambda: self.build(store, params, query)
        )

    def response(self, request: Request, params: dict[str, str], query: Any) -> Response:
        """The route's answer: the same checks and :meth:`answer` as :class:`CachedReads`."""
        store = scoped_store(request)  # not a Depends: on this hot path FastAPI's dependency solving cost more
        if self.check is not None:
            self.check(store, params)
        return Response(self.answer(request.app.state, store, params, query), media_type="application/json")


#: Every route answered by :class:`CachedReads`, registered by the module that defines the route.
CACHED_READS: list[CachedRead] = []


def cached_read(read: CachedRead) -> CachedRead:
    CACHED_READS.append(read)
    return read


def _query(model: type[BaseModel], raw: bytes) -> Any | None:
    """The query as the route's model validates it; None where FastAPI should answer (a 422, or a
    repeated parameter, whose reading is FastAPI's to decide)."""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    values = dict(pairs)
    if len(values) != len(pairs):
        return None
    try:
        return model.model_validate(values)
    except ValidationError:
        return None


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


class CachedReads:
    """ASGI middleware: answers a registered GET whose checks all pass (cached, or built and cached);
    passes anything else on untouched."""

    def __init__(self, app, reads: list[CachedRead] | None = None) -> None:
        self.app = app
        self.reads = CACHED_READS if reads is None else reads

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            body = self._cached(scope)
            if body is not None:
                headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _cached(self, scope: dict) -> bytes | None:
        for read in self.reads:
            match = read.pattern.fullmatch(scope["path"])
            if match is not None:
                break
        else:
            return None
        state = scope["app"].state
        try:
            principal = principal_for(state, _header(scope, b"authorization"))
        except HTTPException:
            return None
        query = _query(read.query, scope["query_string"])
        if query is None:
            return None
        params = match.groupdict()
        store = ScopedStore(state.store, principal, state.owners)
        if read.check is not None:
            try:
                read.check(store, params)
            except GeonasError:
                return None
        limiter = state.rate_limiter
        if limiter is not None:
            client = scope.get("client")
            if limiter.take(rate_key(principal, client[0] if client else None)) > 0:
                return None  # the route's dependency answers the 429, with its Retry-After
        body = read.answer(state, store, params, query)
        scope["route"] = read  # the metrics label the answer with the route's template
        state.metrics.cached_reads.labels(read.path).inc()
        return body
