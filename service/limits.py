"""Request limits: body size (413) and a per-token rate limit (429 with Retry-After).

The rate limit is an in-process token bucket per principal. With several API replicas each has its
own buckets, so a client may get up to N× the rate across N replicas (and a restart refills them);
that is acceptable for protecting one process from a runaway script. A hard global quota would need a
shared counter (Redis, or the gateway in front of the API).
"""

from __future__ import annotations

import json
import math
import threading
import time

from fastapi import HTTPException, Request

from .auth import Principal, principal_of

__all__ = ["BodySizeLimit", "TokenBucket", "rate_key", "rate_limit"]


class BodySizeLimit:
    """ASGI middleware: a declared or streamed body over ``max_bytes`` is a 413 before any route runs."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    return await self._reject(send)
        if declared is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # Streamed without a length: read it here (never more than the limit) and replay it, so
            # the route sees an ordinary body and an oversized one never reaches a parser.
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    return await self._reject(send)
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        await self.app(scope, receive, send)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``, one bucket per key; thread-safe."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if a request may go now, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


def rate_key(principal: Principal, client_host: str | None) -> str:
    """Whose bucket a request takes from: its token's, or with auth off its client address's."""
    return principal.token_id or client_host or principal.name


async def rate_limit(request: Request) -> None:
    """Router dependency after authentication: per token (or per client address when auth is off)."""
    bucket: TokenBucket | None = request.app.state.rate_limiter
    if bucket is None:
        return
    wait = bucket.take(rate_key(principal_of(request), request.client.host if request.client else None))
    if wait > 0:
        raise HTTPException(
            429,
            detail=f"rate limit of {bucket.rate:g} requests/s exceeded; retry in {wait:.1f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
