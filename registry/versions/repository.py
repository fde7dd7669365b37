from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from registry.models import AdapterVersion, Alias, AliasEvent
from registry.pagination import Page, paginate


def get(session: Session, version_id: int) -> AdapterVersion | None:
    return session.get(AdapterVersion, version_id)


def get_by_number(session: Session, task_id: int, number: int) -> AdapterVersion | None:
    return session.scalar(
        select(AdapterVersion).where(AdapterVersion.task_id == task_id, AdapterVersion.number == number)
    )


def latest(session: Session, task_id: int) -> AdapterVersion | None:
    return session.scalar(
        select(AdapterVersion).where(AdapterVersion.task_id == task_id)
        .order_by(AdapterVersion.number.desc()).limit(1)
    )


def get_alias(session: Session, task_id: int, name: str) -> Alias | None:
    return session.scalar(select(Alias).where(Alias.task_id == task_id, Alias.name == name))


def aliases_for_task(session: Session, task_id: int) -> list[Alias]:
    return list(session.scalars(select(Alias).where(Alias.task_id == task_id).order_by(Alias.name)))


def alias_events(session: Session, task_id: int, limit: int = 100) -> list[AliasEvent]:
    return list(session.scalars(
        select(AliasEvent).where(AliasEvent.task_id == task_id).order_by(AliasEvent.id.desc()).limit(limit)
    ))


def list_page(
    session: Session,
    *,
    task_id: int | None = None,
    method: str | None = None,
    base_model_id: int | None = None,
    dataset_id: int | None = None,
    tag: str | None = None,
    min_metric: float | None = None,
    limit: int,
    cursor: str | None,
    q: str | None = None,
    origin: str | None = None,
) -> Page[AdapterVersion]:
    stmt = select(AdapterVersion)
    if q:
        from registry.models import Task

        stmt = stmt.join(Task, Task.id == AdapterVersion.task_id).where(or_(
            Task.name.contains(q.lower(), autoescape=True),
            AdapterVersion.description.contains(q, autoescape=True),
            Task.description.contains(q, autoescape=True)))
    if origin:
        stmt = stmt.where(AdapterVersion.origin == origin)
    if task_id is not None:
        stmt = stmt.where(AdapterVersion.task_id == task_id)
    if method:
        stmt = stmt.where(AdapterVersion.method == method)
    if base_model_id is not None:
        stmt = stmt.where(AdapterVersion.base_model_id == base_model_id)
    if dataset_id is not None:
        stmt = stmt.where(AdapterVersion.dataset_id == dataset_id)
    if min_metric is not None:
        stmt = stmt.where(AdapterVersion.primary_metric >= min_metric)
    if tag:
        stmt = stmt.where(func.cast(AdapterVersion.tags, type_=AdapterVersion.description.type).contains(f'"{tag}"'))
    if task_id is not None:
        return paginate(session, stmt, sort_col=AdapterVersion.number, id_col=AdapterVersion.id, descending=True,
                        limit=limit, cursor=cursor)
    return paginate(session, stmt, sort_col=AdapterVersion.id, id_col=AdapterVersion.id, descending=True,
                    limit=limit, cursor=cursor)


def children(session: Session, version_id: int) -> list[AdapterVersion]:
    return list(session.scalars(
        select(AdapterVersion).where(AdapterVersion.parent_version_id == version_id).order_by(AdapterVersion.id)
    ))


def referenced_sha256s(session: Session) -> set[str]:
    """Every blob that some row refers to (versions, base models, datasets); the orphan reaper keeps these."""
    from registry.models import BaseModel, Dataset

    out: set[str] = set()
    for files in session.scalars(select(AdapterVersion.files)):
        out.update(f["sha256"] for f in files)
    for files in session.scalars(select(BaseModel.files)):
        out.update(f["sha256"] for f in files)
    for splits in session.scalars(select(Dataset.splits)):
        out.update(s["sha256"] for s in splits.values())
    return out


def count(session: Session) -> int:
    return int(session.scalar(select(func.count(AdapterVersion.id))) or 0)


def recent(session: Session, limit: int = 10) -> list[AdapterVersion]:
    return list(session.scalars(select(AdapterVersion).order_by(AdapterVersion.id.desc()).limit(limit)))


def recent_alias_events(session: Session, limit: int = 10) -> list[AliasEvent]:
    """The newest alias moves across all tasks (promotions and removals), newest first."""
    return list(session.scalars(select(AliasEvent).order_by(AliasEvent.id.desc()).limit(limit)))


def _manifest_statements() -> dict[str, Any]:
    """Built once per process: plain Core statements on the tables with bind parameters, so each
    pull pays neither statement construction nor ORM entity processing.

    Each one returns the version with the names of every alias pointing at it, one row per alias
    (an outer join on the aliases' ``(task_id, ...)`` index): the whole manifest in one round trip."""
    from sqlalchemy import and_, bindparam
    from sqlalchemy.orm import aliased

    from registry.models import BaseModel, Task

    tt, vt, at, bt = Task.__table__, AdapterVersion.__table__, Alias.__table__, BaseModel.__table__
    t, v, a, b = tt.c, vt.c, at.c, bt.c
    others = aliased(at)
    cols = (t.id.label("task_id"), t.name.label("task"), v.id, v.task_type, v.number, v.method, v.method_config,
            v.labels, v.base_model_sha256, b.name.label("base_name"), b.architecture, v.files, v.metrics,
            v.created_at, others.c.name.label("alias_name"))

    def with_aliases(joined: Any) -> Any:
        return joined.join(bt, b.id == v.base_model_id).outerjoin(
            others, and_(others.c.task_id == t.id, others.c.version_id == v.id))

    by_alias = (select(*cols).select_from(with_aliases(tt.join(at, a.task_id == t.id).join(vt, v.id == a.version_id)))
                .where(t.name == bindparam("task"), a.name == bindparam("alias")))
    by_number = (select(*cols).select_from(with_aliases(tt.join(vt, v.task_id == t.id)))
                 .where(t.name == bindparam("task"), v.number == bindparam("number")))
    newest = (select(v.id).select_from(tt.join(vt, v.task_id == t.id)).where(t.name == bindparam("task"))
              .order_by(v.number.desc()).limit(1).scalar_subquery())
    latest_ = select(*cols).select_from(with_aliases(tt.join(vt, v.task_id == t.id))).where(v.id == newest)
    return {"alias": by_alias, "number": by_number, "latest": latest_}


_STMTS: dict[str, Any] = {}


def _stmt(name: str) -> Any:
    if not _STMTS:
        _STMTS.update(_manifest_statements())
    return _STMTS[name]


def manifest_rows(session: Session, task_name: str, *, alias: str | None = None,
                  version: int | None = None) -> list[Any]:
    """The pull manifest's data in one joined statement (task, version, base model, and one row per
    alias on that version), or [] when the task, alias or version is missing.

    The hot path of every pull: unique-index lookups, no ORM identity work. [] means "something is
    missing"; the caller then takes the ORM path, which says exactly what."""
    conn = session.connection()
    if alias is not None:
        return list(conn.execute(_stmt("alias"), {"task": task_name, "alias": alias}))
    if version is not None:
        return list(conn.execute(_stmt("number"), {"task": task_name, "number": version}))
    return list(conn.execute(_stmt("latest"), {"task": task_name}))


def _task_versions_statements() -> dict[str, Any]:
    from sqlalchemy import and_, bindparam
    from sqlalchemy.orm import aliased

    from registry.models import BaseModel

    vt = AdapterVersion.__table__
    v, b = vt.c, BaseModel.__table__.c
    parent = aliased(vt)
    base = (
        select(*vt.c, b.name.label("base_name"), parent.c.number.label("parent_number"))
        .select_from(vt.join(BaseModel.__table__, b.id == v.base_model_id)
                     .outerjoin(parent, parent.c.id == v.parent_version_id))
        .where(v.task_id == bindparam("task_id"))
    )
    after = base.where(or_(v.number < bindparam("number"), and_(v.number == bindparam("number"),
                                                                 v.id < bindparam("vid"))))
    order = (v.number.desc(), v.id.desc())
    return {"first": base.order_by(*order).limit(bindparam("lim")),
            "after": after.order_by(*order).limit(bindparam("lim"))}


_LIST_STMTS: dict[str, Any] = {}


def task_versions_rows(session: Session, task_id: int, *, limit: int, after: tuple[int, int] | None) -> list[Any]:
    """One page (plus one row, to tell whether there is a next page) of a task's versions, newest
    first, with base model name and parent number joined in: one indexed query, keyset on
    (number, id) exactly like :func:`list_page`."""
    if not _LIST_STMTS:
        _LIST_STMTS.update(_task_versions_statements())
    conn = session.connection()
    if after is None:
        return list(conn.execute(_LIST_STMTS["first"], {"task_id": task_id, "lim": limit + 1}))
    return list(conn.execute(_LIST_STMTS["after"], {"task_id": task_id, "lim": limit + 1, "number": after[0],
                                                    "vid": after[1]}))
