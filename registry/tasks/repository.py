from __future__ import annotations

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from registry.models import AdapterVersion, Task
from registry.pagination import Page, paginate


def get_by_name(session: Session, name: str) -> Task | None:
    return session.scalar(select(Task).where(Task.name == name))


def list_page(
    session: Session, *, q: str | None, tag: str | None, type_: str | None, limit: int, cursor: str | None
) -> Page[Task]:
    stmt = select(Task)
    if q:
        stmt = stmt.where(or_(Task.name.contains(q.lower(), autoescape=True),
                              Task.description.contains(q, autoescape=True)))
    if type_:
        stmt = stmt.where(Task.type == type_)
    if tag:
        # JSON arrays are matched as text so the same query works on SQLite and PostgreSQL.
        stmt = stmt.where(func.cast(Task.tags, type_=Task.description.type).contains(f'"{tag}"'))
    return paginate(session, stmt, sort_col=Task.id, id_col=Task.id, descending=False, limit=limit, cursor=cursor)


def allocate_version_number(session: Session, task_id: int) -> int:
    """Atomically take the next version number; the row stays locked until commit (gapless)."""
    number = session.execute(
        update(Task).where(Task.id == task_id).values(next_version=Task.next_version + 1)
        .returning(Task.next_version)
    ).scalar_one()
    return int(number)


def version_count(session: Session, task_id: int) -> int:
    return int(session.scalar(select(func.count(AdapterVersion.id)).where(AdapterVersion.task_id == task_id)) or 0)


def count(session: Session) -> int:
    return int(session.scalar(select(func.count(Task.id))) or 0)
