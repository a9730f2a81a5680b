"""Settings for the control plane, read once from the environment (``GEONAS_*``) and cached.

With nothing set, geonas is the embedded default: a local Ray started in-process, a SQLite file and
a storage folder under ``./.geonas``. ``RAY_ADDRESS`` and ``GEONAS_DATABASE_URL`` point it at a real
cluster and database instead; nothing else changes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

DEFAULT_HOME = Path(".geonas")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GEONAS_", env_file=".env", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="Folder for the embedded default's state.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in `home`.")
    storage_path: str | None = Field(
        None, description="Ray Tune storage and artifacts: a local folder or an object-store URI."
    )
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("RAY_ADDRESS", "GEONAS_RAY_ADDRESS"),
        description="Ray cluster to use; unset starts a local one.",
    )
    dashboard_url: str | None = Field(
        None, description="Public URL of the Ray dashboard for links; default: asked from Ray."
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    data_roots: list[Path] = Field(
        default_factory=list,
        description="Folders a spec may read datasets from; empty allows any readable folder.",
    )
    local_num_cpus: int | None = Field(None, description="CPUs for a locally started Ray.")
    auth: bool | None = Field(
        None,
        description="Bearer-token auth: true/false forces it; unset = on, except for the embedded local "
        "default (no RAY_ADDRESS and the API bound to loopback).",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body; bigger is a 413.")
    rate_limit_per_s: float = Field(20.0, ge=0, description="Requests per second per token; 0 = no limit.")
    rate_limit_burst: int = Field(100, ge=1, description="Requests a token may make at once before 429s.")
    response_cache_mb: int = Field(
        256, ge=0, le=65536, description="Memory for cached leaderboard and trial-page answers, per API process."
    )
    shared_response_cache: bool = Field(
        True, description="Share cached answers between the API's worker processes through a file in "
        "the home folder (service/routes/cache.py: SharedResponses)."
    )
    cache_max_age_s: float = Field(
        0.1, ge=0, le=60, description="Leaderboard and trial pages may miss other processes' writes of the last "
        "this many seconds (0: never; see service/routes/cache.py)."
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'geonas.db').resolve()}"

    @property
    def resolved_storage_path(self) -> str:
        if self.storage_path:
            return self.storage_path
        return str((self.home / "storage").resolve())


@lru_cache
def get_settings() -> Settings:
    return Settings()
