"""Who is asking, and whether they may write: identities, tokens and the write rate limit.

- **Identity.** A browser gets a random identity on its first visit, kept in an HttpOnly,
  SameSite=Lax cookie: script on the page (or injected into it) cannot read it, other sites
  cannot make the browser send it with a write, and it needs no code in the page. API
  clients name themselves with the ``X-Digitrec-User`` header instead. Identities only keep
  one user's corrections from changing another user's answers; they prove nothing, which is
  what the write token is for.
- **Write token.** A server that others can reach (``digitrec serve`` on an address that is
  not loopback) refuses writes without ``Authorization: Bearer TOKEN``.
- **Rate limit.** Writes are limited per client address by a token bucket (an identity
  costs nothing to change, an address does), answered with 429 and ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict

from fastapi import HTTPException, Request, Response

from digitrec.persistence.sample_db import SampleError, checked_owner

USER_COOKIE = "digitrec_user"
USER_HEADER = "x-digitrec-user"
_COOKIE_AGE = 400 * 24 * 3600  # the longest browsers keep a cookie


def new_identity() -> str:
    """A random user name: 128 bits, URL-safe."""
    return secrets.token_urlsafe(16)


def identity_from(request: Request) -> tuple[str, bool]:
    """The caller's user name, and whether it is new (so the response must set the cookie).

    A malformed header is a 422; a malformed cookie is replaced with a new identity."""
    named = request.headers.get(USER_HEADER)
    if named is not None:
        if not named.strip():  # the empty name is the shared set's, which no client is
            raise HTTPException(422, f"{USER_HEADER} is empty: name a user, or send no header")
        try:
            return checked_owner(named.strip()), False
        except SampleError as exc:
            raise HTTPException(422, f"{USER_HEADER}: {exc}") from None
    cookie = request.cookies.get(USER_COOKIE)
    if cookie:
        try:
            if checked_owner(cookie):
                return cookie, False
        except SampleError:
            pass
    return new_identity(), True


def remember_identity(response: Response, owner: str) -> None:
    response.set_cookie(
        USER_COOKIE, owner, max_age=_COOKIE_AGE, httponly=True, samesite="lax", path="/"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to listen on) reaches only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_token(request: Request, expected: str | None, what: str) -> None:
    """401 unless the request carries ``expected`` as its bearer token (no check when
    ``expected`` is None)."""
    if expected is None:
        return
    given = bearer_token(request)
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401,
            f"{what} need the server's token: send Authorization: Bearer TOKEN "
            "(printed by `digitrec serve`, or set with DIGITREC_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


class RateLimit:
    """A token bucket per key: ``burst`` writes at once, refilled at ``per_second``.

    At most ``max_keys`` buckets are kept (the least recently used go first; a forgotten
    client starts again with a full bucket, which costs an attacker more addresses than it
    gains)."""

    def __init__(self, burst: float, per_second: float, max_keys: int = 10_000) -> None:
        self.burst = float(burst)
        self.per_second = float(per_second)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one write of ``key``: 0.0 if allowed, else the seconds until one is."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.per_second)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.per_second if self.per_second > 0 else math.inf
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    def check(self, key: str) -> None:
        """429 with ``Retry-After`` when ``key`` has no write left."""
        wait = self.take(key)
        if wait > 0:
            seconds = 86400 if math.isinf(wait) else max(1, math.ceil(wait))
            raise HTTPException(
                429,
                f"too many writes from {key}: try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
