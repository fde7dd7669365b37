"""Names of tasks, base models, aliases and tags.

Names end up in URLs, CLI arguments and log lines (never in storage keys: those are content
addresses), so they are held to a strict pattern *after* NFKC normalisation: a fullwidth
``．．／`` normalises to ``../`` and must be refused like the ASCII form.
"""

from __future__ import annotations

import re
import unicodedata

from registry.errors import InvalidInput

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
MAX_NAME_LEN = 64


def validate_name(value: object, *, field: str = "name") -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    normalised = unicodedata.normalize("NFKC", value)
    if len(normalised) > MAX_NAME_LEN:
        raise InvalidInput(f"{field} is longer than {MAX_NAME_LEN} characters", field=field)
    if normalised != value:
        raise InvalidInput(f"{field} must be plain ASCII (it changes under Unicode normalisation)", field=field)
    if ".." in normalised or not NAME_RE.fullmatch(normalised):
        raise InvalidInput(
            f"{field} {value!r} is not a valid name: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, without '..'",
            field=field,
        )
    return normalised
