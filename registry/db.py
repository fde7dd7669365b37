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
from typing import Any, TypeVar

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from registry.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    connect_args: dict[str, Any] = {}
    if _idle_transaction_timeout_s:
        ms = max(1, int(_idle_transaction_timeout_s * 1000))
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={ms}"
    return create_engine(url, pool_pre_ping=True, pool_size=settings.db_pool_size,
                         max_overflow=settings.db_max_overflow, pool_timeout=settings.db_pool_timeout_s,
                         connect_args=connect_args)


def make_read_engine(settings: Settings) -> Engine:
    """The engine behind :func:`read_scope`: PostgreSQL in autocommit, without pre-ping.

    A hot read is one or two single-statement lookups, each consistent on its own, so it needs no
    transaction; in autocommit it costs one round trip per statement instead of pre-ping + BEGIN +
    statements + COMMIT (five round trips for a pull manifest, the bound on 2 cores). A connection the
    server dropped is caught by :func:`read_scope`'s one retry instead of a ping on every checkout."""
    # hot_read caps the reads running at once per process at hot_read_slots: one connection each.
    slots = settings.hot_read_slots
    return create_engine(settings.database_url, isolation_level="AUTOCOMMIT", pool_size=slots or settings.db_pool_size,
                         max_overflow=0 if slots else settings.db_max_overflow,
                         pool_timeout=settings.db_pool_timeout_s, pool_recycle=3600)


_engines: dict[str, Engine] = {}
_read_engines: dict[str, Engine] = {}
_idle_transaction_timeout_s: float | None = None  # see set_idle_transaction_timeout
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


def get_read_engine(settings: Settings | None = None) -> Engine:
    """PostgreSQL: the hot-read engine. SQLite is in-process (no round trips to save): the main
    engine, with its pragmas."""
    settings = settings or get_settings()
    url = settings.database_url
    if url.startswith("sqlite"):
        return get_engine(settings)
    with _lock:
        if url not in _read_engines:
            _read_engines[url] = make_read_engine(settings)
        return _read_engines[url]


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
        for engine in (*_engines.values(), *_read_engines.values()):
            engine.dispose()
        _engines.clear()
        _read_engines.clear()
        _makers.clear()


def set_idle_transaction_timeout(seconds: float | None) -> None:
    """PostgreSQL: end this process's sessions that sit idle inside a transaction for ``seconds``
    (``idle_in_transaction_session_timeout``; None turns it off). Worker processes set it (to the
    heartbeat timeout): a worker frozen mid-transaction (SIGSTOP, a paused VM, a stuck thread) would
    otherwise hold its job's row lock until it resumes, and the reaper's ``FOR UPDATE SKIP LOCKED``
    would skip that job on every pass, leaving it ``running`` forever. Not for the API, whose request
    transactions stay open while uploads stream. Applies to engines made afterwards, so the existing
    ones are disposed; call it before forking."""
    global _idle_transaction_timeout_s
    _idle_transaction_timeout_s = seconds if seconds and seconds > 0 else None
    dispose_engines()


def forget_inherited_connections() -> None:
    """In a forked child: drop the pooled connections inherited from the parent without closing the
    parent's sockets (``dispose(close=False)``), and a lock another thread may have held at the fork."""
    global _lock
    for engine in (*_engines.values(), *_read_engines.values()):
        engine.dispose(close=False)
    _engines.clear()
    _read_engines.clear()
    _makers.clear()
    _lock = threading.Lock()


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


def read_scope(settings: Settings, fn: Callable[[Session], T]) -> T:
    """``fn(session)`` on the hot read engine (see :func:`make_read_engine`); read-only, never commits.

    With no pre-ping, the first statement on a connection the server dropped (a PostgreSQL restart)
    fails as a disconnect; SQLAlchemy then invalidates the pool, and the call runs once more on a
    fresh connection. ``fn`` must only read: it may run twice."""
    engine = get_read_engine(settings)
    for attempt in (1, 2):
        session = Session(bind=engine, expire_on_commit=False, autoflush=False)
        try:
            return fn(session)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
            log.warning("hot read hit a dropped database connection; retrying on a fresh one")
        finally:
            session.close()
    raise AssertionError("unreachable")
