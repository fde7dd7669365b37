from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.models import Dataset
from registry.pagination import Page, paginate


def get(session: Session, id_: int) -> Dataset | None:
    return session.get(Dataset, id_)


def get_by_sha(session: Session, task_id: int, sha256: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.task_id == task_id, Dataset.sha256 == sha256))


def list_page(session: Session, *, task_id: int | None, limit: int, cursor: str | None) -> Page[Dataset]:
    stmt = select(Dataset)
    if task_id is not None:
        stmt = stmt.where(Dataset.task_id == task_id)
    return paginate(session, stmt, sort_col=Dataset.id, id_col=Dataset.id, descending=True,
                    limit=limit, cursor=cursor)


def count(session: Session) -> int:
    return int(session.scalar(select(func.count(Dataset.id))) or 0)
