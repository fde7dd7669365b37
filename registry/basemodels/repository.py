from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.models import AdapterVersion, BaseModel, Task
from registry.pagination import Page, paginate


def get_by_name(session: Session, name: str) -> BaseModel | None:
    return session.scalar(select(BaseModel).where(BaseModel.name == name))


def get(session: Session, id_: int) -> BaseModel | None:
    return session.get(BaseModel, id_)


def list_page(session: Session, *, q: str | None, limit: int, cursor: str | None) -> Page[BaseModel]:
    stmt = select(BaseModel)
    if q:
        stmt = stmt.where(BaseModel.name.contains(q.lower(), autoescape=True))
    return paginate(session, stmt, sort_col=BaseModel.id, id_col=BaseModel.id, descending=False,
                    limit=limit, cursor=cursor)


def tasks_with_adapters(session: Session, base_model_id: int) -> list[tuple[str, int]]:
    stmt = (
        select(Task.name, func.count(AdapterVersion.id))
        .join(AdapterVersion, AdapterVersion.task_id == Task.id)
        .where(AdapterVersion.base_model_id == base_model_id)
        .group_by(Task.name)
        .order_by(Task.name)
    )
    return [(name, int(n)) for name, n in session.execute(stmt)]


def count(session: Session) -> int:
    return int(session.scalar(select(func.count(BaseModel.id))) or 0)
