"""Bearer tokens, owners and visibility: who is asking, and what they may see.

A token is ``gnt_<id>_<secret>``. Only ``sha256(salt + secret)`` with a per-token random salt is
stored, so a leaked database does not leak usable tokens; the secret is 256 random bits, which makes
a slow password hash unnecessary (nothing to brute-force). The id part finds the row without a scan.

Every experiment, pretraining job and model has an owner (the token's name). Another user's resource
is a 404, exactly like a missing one, so ids cannot be probed; an admin token sees everything.

Auth is on unless turned off by settings, or by default for the embedded local setup (no
``RAY_ADDRESS`` and the API bound to loopback): there, the only users are on this machine, and the
local principal is an admin.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer

from search_spaces.errors import NotFound

from .routes.cache import OwnerMemo
from .settings import Settings
from .store import Store

__all__ = [
    "Principal",
    "LOCAL",
    "auth_required",
    "create_token",
    "Authenticator",
    "authenticate",
    "principal_for",
    "principal_of",
    "owner_filter",
    "check_owner",
    "bearer_scheme",
    "ScopedStore",
    "scoped_store",
]

log = logging.getLogger("geonas.auth")

PREFIX = "gnt"
#: How long a verified token is trusted without asking the database again (revocation delay).
CACHE_S = 30.0

#: Documents the scheme in OpenAPI (the lock in /docs); the check itself is :func:`authenticate`.
bearer_scheme = HTTPBearer(auto_error=False, description="`geonas token create --name NAME` prints one.")


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool = False
    token_id: str | None = None


LOCAL = Principal("local", admin=True)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_required(settings: Settings) -> bool:
    """Forced by ``settings.auth``; else off only for the embedded local default."""
    if settings.auth is not None:
        return settings.auth
    return not (settings.ray_address is None and _loopback(settings.api_host))


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def create_token(store: Store, name: str, admin: bool = False) -> str:
    """Store a new token for user ``name`` and return it; this is the only time it is visible."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a token's name (its user) must be 1..100 characters")
    token_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    store.add_token(token_id, name, admin, salt, _digest(salt, secret))
    return f"{PREFIX}_{token_id}_{secret}"


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, detail=message, headers={"WWW-Authenticate": 'Bearer realm="geonas"'})


class Authenticator:
    """Verifies tokens against the store, caching good ones for :data:`CACHE_S` seconds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        row = self.store.get_token(token_id) if prefix == PREFIX and token_id and secret else None
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.digest, _digest(row.salt, secret)):
            raise _unauthorized("invalid or revoked token; create one with `geonas token create --name NAME`")
        principal = Principal(row.name, bool(row.admin), row.id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (principal, now + CACHE_S)
        return principal


def principal_for(state: Any, authorization: str) -> Principal:
    """Who sends this ``Authorization`` header to the app whose ``state`` is given; 401 if nobody."""
    if not state.auth_required:
        return LOCAL
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("this API needs a bearer token: send `Authorization: Bearer <token>`")
    return state.authenticator.verify(token.strip())


async def authenticate(request: Request) -> Principal:
    """Router dependency: sets ``request.state.principal`` or answers 401."""
    principal = principal_for(request.app.state, request.headers.get("authorization", ""))
    request.state.principal = principal
    return principal


def principal_of(request: Request) -> Principal:
    """Who is asking: set by :func:`authenticate`; a route without it sees nothing while auth is on."""
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return principal
    return ANONYMOUS if getattr(request.app.state, "auth_required", False) else LOCAL


def owner_filter(request: Request) -> str | None:
    """The owner to filter lists by: the caller's name, or None (everything) for an admin."""
    principal = principal_of(request)
    return None if principal.admin else principal.name


def check_owner(request: Request, resource: Any, missing: str) -> Any:
    """``resource`` if the caller may see it; otherwise the same 404 a missing one gives."""
    principal = principal_of(request)
    if not principal.admin and getattr(resource, "owner", None) != principal.name:
        raise NotFound(missing)
    return resource


def announce(settings: Settings) -> bool:
    """Log whether auth is on (once, at start) and return it."""
    required = auth_required(settings)
    if required:
        log.info("auth is on: every /v1 request needs a bearer token (`geonas token create --name NAME`)")
    else:
        log.warning(
            "auth is OFF: embedded local default (no RAY_ADDRESS, API on %s); set GEONAS_AUTH=true to require tokens",
            settings.api_host,
        )
    return required


ANONYMOUS = Principal("", admin=False)


class ScopedStore:
    """The store as one principal sees it: what they create is theirs; others' resources do not exist.

    Routes get this from ``get_store_dep`` instead of the raw store, so ownership is enforced in one
    place for every route (including ones added later) rather than remembered in each. An admin sees
    everything; anything not listed here is passed through unchanged.
    """

    def __init__(self, store: Store, principal: Principal, owners: OwnerMemo | None = None) -> None:
        self._store = store
        self.principal = principal
        self._owner = None if principal.admin else principal.name
        self._owners = owners if owners is not None else OwnerMemo()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _visible(self, resource: Any, missing: str) -> Any:
        if self._owner is not None and getattr(resource, "owner", None) != self._owner:
            raise NotFound(missing)
        return resource

    # -- creation: the caller owns it --------------------------------------------------------
    def create_experiment(self, name: str, spec: dict[str, Any], owner: str | None = None):
        return self._store.create_experiment(name, spec, owner=self.principal.name)

    def create_pretraining(self, name: str, spec: dict[str, Any], owner: str | None = None):
        return self._store.create_pretraining(name, spec, owner=self.principal.name)

    def create_prediction(self, name: str, model_id: str, spec: dict[str, Any], owner: str | None = None):
        return self._store.create_prediction(name, model_id, spec, owner=self.principal.name)

    # -- single resources: someone else's is a 404 --------------------------------------------
    def get_prediction(self, prediction_id: str):
        job = self._store.get_prediction(prediction_id)
        return self._visible(job, f"prediction job {prediction_id} does not exist; list them with GET /v1/predictions")

    def update_prediction(self, prediction_id: str, **kwargs: Any):
        if self._owner is not None:
            self.get_prediction(prediction_id)
        return self._store.update_prediction(prediction_id, **kwargs)

    def reopen_prediction(self, prediction_id: str):
        if self._owner is not None:
            self.get_prediction(prediction_id)
        return self._store.reopen_prediction(prediction_id)

    def get_experiment(self, experiment_id: str):
        exp = self._store.get_experiment(experiment_id)
        return self._visible(exp, f"experiment {experiment_id} does not exist; list them with GET /v1/experiments")

    def get_pretraining(self, job_id: str):
        job = self._store.get_pretraining(job_id)
        return self._visible(job, f"pretraining job {job_id} does not exist; list them with GET /v1/pretraining")

    def get_model(self, model_id: str):
        model = self._store.get_model(model_id)
        return self._visible(model, f"model {model_id} does not exist; list them with GET /v1/models")

    def delete_experiment(self, experiment_id: str) -> None:
        self._store.delete_experiment(experiment_id)
        self._owners.forget(experiment_id)  # the memo must not answer for an experiment that is gone

    def check_experiment(self, experiment_id: str) -> None:
        """NotFound unless the experiment exists and is the caller's (or the caller is an admin).

        Owners never change, so they are remembered (the app's :class:`OwnerMemo`): a hot read of an
        experiment's trials costs no query for the check.
        """
        owner = self._owners.owner(experiment_id, self._store.experiment_owner)
        if self._owner is not None and owner != self._owner:
            raise NotFound(f"experiment {experiment_id} does not exist; list them with GET /v1/experiments")

    def list_trials(self, experiment_id: str, *args: Any, **kwargs: Any):
        if self._owner is not None:
            self.check_experiment(experiment_id)
        return self._store.list_trials(experiment_id, *args, **kwargs)

    def trial_page(self, experiment_id: str, *args: Any, **kwargs: Any):
        if self._owner is not None:
            self.check_experiment(experiment_id)
        return self._store.trial_page(experiment_id, *args, **kwargs)

    def update_experiment(self, experiment_id: str, **kwargs: Any):
        if self._owner is not None:
            self.check_experiment(experiment_id)
        return self._store.update_experiment(experiment_id, **kwargs)

    def update_pretraining(self, pretraining_id: str, **kwargs: Any):
        if self._owner is not None:
            self.get_pretraining(pretraining_id)
        return self._store.update_pretraining(pretraining_id, **kwargs)

    def cancel_open_trials(self, experiment_id: str, reason: str) -> int:
        if self._owner is not None:
            self.check_experiment(experiment_id)
        return self._store.cancel_open_trials(experiment_id, reason)

    # -- lists: only the caller's ---------------------------------------------------------------
    def list_experiments(self, limit: int = 100, offset: int = 0, owner: str | None = None):
        return self._store.list_experiments(limit, offset, owner=self._owner)

    def list_pretraining(self, limit: int = 100, owner: str | None = None):
        return self._store.list_pretraining(limit, owner=self._owner)

    def list_predictions(self, limit: int = 100, owner: str | None = None):
        return self._store.list_predictions(limit, owner=self._owner)

    def list_models(self, experiment_id: str | None = None, limit: int = 100, owner: str | None = None):
        return self._store.list_models(experiment_id, limit, owner=self._owner)

    def leaderboard_candidates(self, *args: Any, **kwargs: Any):
        kwargs["owner"] = self._owner
        return self._store.leaderboard_candidates(*args, **kwargs)


def scoped_store(request: Request) -> ScopedStore:
    return ScopedStore(request.app.state.store, principal_of(request), request.app.state.owners)
