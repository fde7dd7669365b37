"""Keyset (cursor) pagination shared by every list endpoint.

The cursor is an opaque base64 of the last row's sort key and id, so pages stay stable while rows
are inserted, and deep pages cost the same as the first.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from registry.errors import InvalidInput

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:
        raise InvalidInput("cursor is not valid", field="cursor") from exc
    if not isinstance(values, list) or len(values) != 2:
        raise InvalidInput("cursor is not valid", field="cursor")
    return values


def paginate(
    session: Session,
    stmt: Select[Any],
    *,
    sort_col: InstrumentedAttribute[Any],
    id_col: InstrumentedAttribute[Any],
    descending: bool,
    limit: int,
    cursor: str | None,
    to_cursor_value: Any = None,
    from_cursor_value: Any = None,
) -> Page[Any]:
    if cursor:
        raw_sort, raw_id = decode_cursor(cursor)
        sort_value = from_cursor_value(raw_sort) if from_cursor_value else raw_sort
        if not isinstance(raw_id, int):
            raise InvalidInput("cursor is not valid", field="cursor")
        if descending:
            stmt = stmt.where(or_(sort_col < sort_value, and_(sort_col == sort_value, id_col < raw_id)))
        else:
            stmt = stmt.where(or_(sort_col > sort_value, and_(sort_col == sort_value, id_col > raw_id)))
    order = (sort_col.desc(), id_col.desc()) if descending else (sort_col.asc(), id_col.asc())
    rows = list(session.scalars(stmt.order_by(*order).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        sort_value = getattr(last, sort_col.key)
        if to_cursor_value:
            sort_value = to_cursor_value(sort_value)
        next_cursor = encode_cursor([sort_value, getattr(last, id_col.key)])
    return Page(rows, next_cursor)
