"""API tokens: add, look up, list and revoke (hashing and checking secrets is :mod:`service.auth`'s)."""

from __future__ import annotations

from sqlalchemy import select

from search_spaces.errors import NotFound

from .core import StoreCore
from .schema import ApiToken, now

__all__ = ["Tokens"]


class Tokens(StoreCore):
    def add_token(self, token_id: str, name: str, admin: bool, salt: str, digest: str) -> ApiToken:
        with self.session() as s:
            token = ApiToken(id=token_id, name=name, admin=admin, salt=salt, digest=digest)
            s.add(token)
        return token

    def get_token(self, token_id: str) -> ApiToken | None:
        with self.session() as s:
            return s.get(ApiToken, token_id)

    def list_tokens(self) -> list[ApiToken]:
        with self.session() as s:
            return list(s.scalars(select(ApiToken).order_by(ApiToken.created_at)))

    def revoke_token(self, token_id: str) -> None:
        with self.session() as s:
            token = s.get(ApiToken, token_id)
            if token is None:
                raise NotFound(f"token {token_id} does not exist; list them with `geonas token list`")
            token.revoked_at = token.revoked_at or now()
