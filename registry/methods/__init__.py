"""Adapter methods: the pure-Python part (names, config validation, artifact metadata).

Nothing here imports torch: the API server imports this module to validate job requests.
The torch part lives in :mod:`registry.methods.model` (import it lazily, inside functions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from registry.errors import InvalidInput
from registry.methods.configs import CONFIG_CLASSES, validate_config

METHOD_NAMES: tuple[str, ...] = (*CONFIG_CLASSES, "peft")
TASK_TYPES: tuple[str, ...] = ("single_label", "text_pair", "regression", "causal_lm")

#: adapter_config.json keeps our metadata under ``auto_mapping.adapter_registry``: ``auto_mapping``
#: is a free-form dict field of every PEFT config, so PEFT 0.21 loads the file without a warning.
META_NAMESPACE = "adapter_registry"
ARTIFACT_FORMAT_VERSION = 1


def validate_method_config(method: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Return the normalised ``config`` for ``method`` (defaults filled in).

    Raises :class:`registry.errors.InvalidInput` with ``field="method"`` for an unknown method
    and ``field="method_config.<key>"`` for unknown keys, wrong types and out-of-range values.
    """
    if not isinstance(method, str) or method not in METHOD_NAMES:
        raise InvalidInput(
            f"unknown method {method!r}; known: {', '.join(METHOD_NAMES)}",
            field="method",
        )
    return validate_config(method, {} if config is None else config)


def read_adapter_meta(adapter_dir: Path) -> dict[str, Any]:
    """Read our metadata (method, method_config, base_model, task_type, labels, metadata...)
    from an artifact directory's ``adapter_config.json`` without importing torch."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
        meta = cfg["auto_mapping"][META_NAMESPACE]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path.name} is missing or not an adapter-registry artifact: {exc}",
                           field="adapter") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise InvalidInput("unsupported adapter artifact format", field="adapter")
    return meta


__all__ = [
    "METHOD_NAMES",
    "TASK_TYPES",
    "META_NAMESPACE",
    "validate_method_config",
    "read_adapter_meta",
]
