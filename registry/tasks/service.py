from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from registry.errors import Conflict, InvalidInput, NotFound
from registry.methods import TASK_TYPES
from registry.models import Task
from registry.names import validate_name
from registry.tasks import repository as repo

MAX_LABELS = 1000
MAX_LABEL_LEN = 200


def validate_labels(task_type: str, labels: Sequence[object]) -> list[str]:
    if task_type in ("regression", "causal_lm"):
        if labels:
            raise InvalidInput(f"a {task_type} task has no labels", field="labels")
        return []
    out: list[str] = []
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_LEN:
            raise InvalidInput(f"label #{i} must be a non-empty string of at most {MAX_LABEL_LEN} characters",
                               field="labels")
        if any(ord(c) < 32 for c in label):
            raise InvalidInput(f"label #{i} contains control characters", field="labels")
        out.append(label)
    if len(set(out)) != len(out):
        raise InvalidInput("labels must be unique", field="labels")
    if len(out) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} labels", field="labels")
    if len(out) == 1:
        raise InvalidInput("a classification task needs at least two labels", field="labels")
    return out


def validate_tags(tags: Sequence[object]) -> list[str]:
    out = [validate_name(t, field="tags") for t in tags]
    if len(out) > 32:
        raise InvalidInput("at most 32 tags", field="tags")
    return sorted(set(out))


def create(
    session: Session, *, name: str, type: str, labels: Sequence[str] = (), description: str = "",
    tags: Sequence[str] = (), actor: str = "",
) -> Task:
    name = validate_name(name, field="name")
    if type not in TASK_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(TASK_TYPES)}", field="type")
    if repo.get_by_name(session, name) is not None:
        raise Conflict(f"task {name!r} already exists", field="name")
    task = Task(name=name, type=type, labels=validate_labels(type, labels), description=description,
                tags=validate_tags(tags), next_version=0, created_by=actor)
    session.add(task)
    session.flush()
    return task


def get_by_name(session: Session, name: str, *, field: str = "task") -> Task:
    name = validate_name(name, field=field)  # a malformed name is a 422, never a lookup
    task = repo.get_by_name(session, name)
    if task is None:
        raise NotFound(f"task {name!r} does not exist", field=field)
    return task


def update(
    session: Session, task: Task, *, description: str | None = None, tags: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> Task:
    if description is not None:
        task.description = description
    if tags is not None:
        task.tags = validate_tags(tags)
    if labels is not None:
        new = validate_labels(task.type, labels)
        if new != task.labels and repo.version_count(session, task.id) > 0:
            raise Conflict("labels are fixed once the task has a version", field="labels")
        task.labels = new
    session.flush()
    return task
