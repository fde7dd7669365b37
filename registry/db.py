"""Engine and session scopes.

Only the scopes here commit: ``session_scope`` (workers, CLI) and the API's request dependency.
Services and repositories flush at most. Work that must happen after a commit (sending a Celery
message that carries a job id) is registered with :func:`after_commit` and run by the scope once the
commit succeeded, so a worker never sees an id whose row is not yet visible.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and write scopes open with
``BEGIN IMMEDIATE``: a deferred transaction that reads first and writes later can fail at once with
"database is locked" when another writer got in between, without waiting for the busy timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from registry.settings import Settings, get_settings

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000, "check_same_thread": False},
            pool_size=8,
            max_overflow=16,
        )
        busy_ms = settings.sqlite_busy_timeout_ms

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            # Let SQLAlchemy's "begin" event decide how each transaction begins.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_engines: dict[str, Engine] = {}
_makers: dict[tuple[str, bool], sessionmaker[Session]] = {}
_lock = threading.Lock()


def get_engine(settings: Settings | None = None) -> Engine:
    """One engine (and pool) per database URL per process."""
    settings = settings or get_settings()
    url = settings.database_url
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(settings)
        return _engines[url]


def new_session(settings: Settings | None = None, *, write: bool = True) -> Session:
    settings = settings or get_settings()
    key = (settings.database_url, write)
    maker = _makers.get(key)
    if maker is None:
        engine = get_engine(settings)
        bind = engine.execution_options(sqlite_immediate=True) if write else engine
        maker = _makers.setdefault(key, sessionmaker(bind=bind, expire_on_commit=False))
    return maker()


def dispose_engines() -> None:
    """Close every pool (tests, and after a fork so children never share connections)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _makers.clear()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` after the enclosing scope commits; dropped on rollback."""
    session.info.setdefault("after_commit", []).append(callback)


def run_after_commit(session: Session) -> None:
    callbacks: list[Callable[[], None]] = session.info.pop("after_commit", [])
    for cb in callbacks:
        try:
            cb()
        except Exception:  # the row is committed; the reaper re-sends lost messages
            log.exception("after-commit callback failed")


@contextmanager
def session_scope(settings: Settings | None = None, *, write: bool = True) -> Iterator[Session]:
    session = new_session(settings, write=write)
    try:
        yield session
        session.commit()
        run_after_commit(session)
    except BaseException:
        session.rollback()
        session.info.pop("after_commit", None)
        raise
    finally:
        session.close()
