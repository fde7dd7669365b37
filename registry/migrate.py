"""Run Alembic migrations programmatically (CLI `adapter-registry migrate`, tests, start scripts)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from registry.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(settings: Settings | None = None) -> Config:
    settings = settings or get_settings()
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = settings.database_url
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    settings = settings or get_settings()
    if settings.is_sqlite:
        settings.home.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)
