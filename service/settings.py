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
