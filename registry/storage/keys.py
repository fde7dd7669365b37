"""The only place that builds storage keys.

Keys are content addressed: ``blobs/sha256/<first two hex>/<full hex>``. No client ever names a
key, so a key can never carry ``..``, an absolute path or anything else a caller chose.
"""

from __future__ import annotations

import re

__all__ = ["BLOB_PREFIX", "blob_key", "check_key", "check_prefix", "check_sha256", "sha256_of_key"]

BLOB_PREFIX = "blobs/sha256/"

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_BLOB_KEY_RE = re.compile(r"blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})")
# One path segment of a key: no leading dot (so no "." / ".." and no hidden temp-file names),
# a conservative character set, bounded length.
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex characters, else raise ``ValueError``."""
    if not isinstance(sha256, str) or _SHA256_RE.fullmatch(sha256) is None:
        raise ValueError(f"not a sha256 hex digest (64 lowercase hex characters): {sha256!r}")
    return sha256


def blob_key(sha256: str) -> str:
    """``blobs/sha256/ab/abcdef...`` for a sha256 hex digest; ``ValueError`` for anything else."""
    check_sha256(sha256)
    return f"{BLOB_PREFIX}{sha256[:2]}/{sha256}"


def sha256_of_key(key: str) -> str | None:
    """The sha256 a blob key addresses, or ``None`` if ``key`` is not a blob key."""
    m = _BLOB_KEY_RE.fullmatch(key)
    if m is None or not m.group(2).startswith(m.group(1)):
        return None
    return m.group(2)


def check_key(key: str) -> str:
    """Defence in depth for the backends: a relative ``/``-separated key of safe segments.

    Refuses empty keys, absolute paths, ``.``/``..`` segments, backslashes, empty segments and
    anything outside ``[A-Za-z0-9._-]``. Returns ``key`` unchanged.
    """
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise ValueError(f"invalid storage key: {key!r}")
    for segment in key.split("/"):
        if _SEGMENT_RE.fullmatch(segment) is None:
            raise ValueError(f"invalid storage key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A ``list_keys`` prefix: empty, or a key prefix (may end with ``/`` or mid-segment)."""
    if prefix == "":
        return prefix
    body = prefix[:-1] if prefix.endswith("/") else prefix
    check_key(body)
    return prefix
