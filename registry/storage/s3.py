"""``S3Store``: any S3-compatible server (AWS S3, MinIO, moto's server) through boto3.

Create-only writes:

1. ``BaseStore`` HEADs the key first; an existing object is compared by its recorded sha256
   (same -> no-op, different -> ``ObjectExists``), so nothing is ever re-uploaded over it.
2. The bytes are hashed while read and verified against the declared sha256 *before* the
   request that makes the object visible; the sha256 is recorded as ``x-amz-meta-sha256`` and
   sent as ``x-amz-checksum-sha256`` (servers that verify checksums refuse corrupted bodies).
3. The write itself is conditional (``If-None-Match: *``) on ``PutObject`` and on
   ``CompleteMultipartUpload``: a writer that lost a race gets ``412`` and the existing object
   stays as it is. Emulators have not always honoured conditional writes (moto#8091), which is
   why the HEAD check in step 1 stays in code; with content-addressed keys a lost race can
   only ever be between identical bytes.
4. After the write the object is HEADed again and its size and recorded sha256 compared.

Large files (``size > multipart_threshold``) are uploaded in parts, each part with its own
``x-amz-checksum-sha256``; the whole-file sha256 is verified before the upload is completed
and the upload is aborted on any error, so no partial object is ever visible.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from registry.storage.base import CHUNK_SIZE, BaseStore, HashingReader, KeyTaken, sha256_stream
from registry.storage.errors import IntegrityFailure, InvalidRange, ObjectNotFound, StorageError
from registry.storage.keys import check_key, check_prefix

__all__ = ["S3Store"]

logger = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_TAKEN = {"PreconditionFailed", "ConditionalRequestConflict"}
_BAD_CHECKSUM = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch"}
MiB = 1024 * 1024


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class _BodyRaw(io.RawIOBase):
    """A botocore ``StreamingBody`` as a raw stream; transport errors become ``StorageError``."""

    def __init__(self, body: Any, key: str) -> None:
        super().__init__()
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StorageError(f"reading {self._key!r} from S3 failed: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


class S3Store(BaseStore):
    """Objects in one bucket. Path-style addressing, SigV4, bounded retries and timeouts."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        public_endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
        conditional_writes: bool = True,
        list_page_size: int = 1000,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.part_size = part_size
        self.conditional_writes = conditional_writes
        self.list_page_size = list_page_size
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # We send x-amz-checksum-sha256 ourselves; don't let botocore add CRC32 trailers
            # that older S3-compatible servers reject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        # Presigned URLs are handed to clients outside the compose network: sign them for the
        # public endpoint (signing is local, no request is made).
        self._presign_client: Any = (
            session.client("s3", endpoint_url=public_endpoint_url, config=config)
            if public_endpoint_url and public_endpoint_url != endpoint_url
            else self.client
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    # ---- error translation

    @contextlib.contextmanager
    def _errors(self, op: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            code, status = _code(exc), _status(exc)
            if code == "NoSuchBucket":
                raise StorageError(f"S3 {op}: bucket {self.bucket!r} does not exist") from exc
            if key is not None and (code in _NOT_FOUND or status == 404):
                raise ObjectNotFound(key) from exc
            if code == "InvalidRange" or status == 416:
                raise InvalidRange(f"{op} {key!r}: range not satisfiable") from exc
            if code in _BAD_CHECKSUM:
                raise IntegrityFailure(f"{op} {key!r}: the server refused the checksum ({code})") from exc
            raise StorageError(f"S3 {op} {key or self.bucket!r} failed: {code or status}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {op} {key or self.bucket!r} failed: {exc}") from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with self._errors("HEAD", key):
                return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except ObjectNotFound:
            return None

    # ---- bucket

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _status(exc) != 404 and _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise StorageError(f"S3 HEAD bucket {self.bucket!r} failed: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 HEAD bucket {self.bucket!r} failed: {exc}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            with self._errors("CreateBucket"):
                self.client.create_bucket(**kwargs)
        except StorageError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and _code(cause) in {"BucketAlreadyOwnedByYou"}):
                raise
        logger.info("created bucket %s", self.bucket)

    # ---- BaseStore primitives

    def _existing_sha256(self, key: str) -> str | None:
        head = self._head(key)
        if head is None:
            return None
        recorded = head.get("Metadata", {}).get("sha256")
        if recorded:
            return str(recorded)
        # Not written by us: hash it (rare; only for objects written by other tools).
        logger.warning("%s has no recorded sha256; hashing it", key)
        stream, _ = self._open(key)
        with stream:
            return sha256_stream(stream)

    def _create(self, key: str, reader: HashingReader, *, sha256: str, size: int) -> None:
        if size > self.multipart_threshold:
            self._create_multipart(key, reader, sha256=sha256)
        else:
            self._create_single(key, reader, sha256=sha256)
        self._check_stored(key, sha256=sha256, size=reader.bytes_read)

    def _create_single(self, key: str, reader: HashingReader, *, sha256: str) -> None:
        data = reader.read_chunk(self.multipart_threshold + 1)
        if reader.read_chunk(1):
            # The source grew after we looked at its size: take the multipart path instead.
            raise StorageError(f"source for {key!r} changed size while being stored")
        reader.verify(sha256)  # before any byte leaves this process
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ChecksumSHA256": _b64(reader.digest()),
            "Metadata": {"sha256": sha256},
            "ContentType": "application/octet-stream",
        }
        if self.conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**kwargs)
        except ClientError as exc:
            if _code(exc) in _TAKEN or _status(exc) == 412:
                raise KeyTaken(key) from exc
            if _code(exc) == "NotImplemented" and self.conditional_writes:
                logger.warning("S3 server does not support If-None-Match; relying on the HEAD check")
                self.conditional_writes = False
                kwargs.pop("IfNoneMatch")
                with self._errors("PUT", key):
                    self.client.put_object(**kwargs)
                return
            with self._errors("PUT", key):
                raise
        except BotoCoreError as exc:
            raise StorageError(f"S3 PUT {key!r} failed: {exc}") from exc

    def _create_multipart(self, key: str, reader: HashingReader, *, sha256: str) -> None:
        with self._errors("CreateMultipartUpload", key):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                Metadata={"sha256": sha256},
                ContentType="application/octet-stream",
                ChecksumAlgorithm="SHA256",
            )["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            number = 1
            while True:
                chunk = reader.read_chunk(self.part_size)
                if not chunk and parts:
                    break
                checksum = _b64(hashlib.sha256(chunk).digest())
                with self._errors("UploadPart", key):
                    resp = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=checksum,
                    )
                parts.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum})
                number += 1
                if len(chunk) < self.part_size:
                    break
            reader.verify(sha256)  # the whole file, before the object becomes visible
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": key,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": parts},
            }
            if self.conditional_writes:
                kwargs["IfNoneMatch"] = "*"
            try:
                self.client.complete_multipart_upload(**kwargs)
            except ClientError as exc:
                if _code(exc) in _TAKEN or _status(exc) == 412:
                    raise KeyTaken(key) from exc
                with self._errors("CompleteMultipartUpload", key):
                    raise
            except BotoCoreError as exc:
                raise StorageError(f"S3 CompleteMultipartUpload {key!r} failed: {exc}") from exc
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # the server may be gone; the bucket lifecycle rule cleans up
                logger.warning("could not abort multipart upload %s of %s", upload_id, key, exc_info=True)
            raise

    def _check_stored(self, key: str, *, sha256: str, size: int) -> None:
        head = self._head(key)
        if head is None:
            raise StorageError(f"{key!r} is not visible after a successful write")
        recorded = head.get("Metadata", {}).get("sha256")
        if recorded != sha256 or int(head.get("ContentLength", -1)) != size:
            raise IntegrityFailure(
                f"{key!r} after write: {head.get('ContentLength')} bytes, sha256 {recorded}; "
                f"expected {size} bytes, sha256 {sha256}",
                expected=sha256,
                actual=recorded,
            )

    def _open(self, key: str) -> tuple[BinaryIO, str | None]:
        check_key(key)
        with self._errors("GET", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        recorded = resp.get("Metadata", {}).get("sha256") or None
        raw = _BodyRaw(resp["Body"], key)
        return io.BufferedReader(raw, CHUNK_SIZE), recorded  # type: ignore[return-value]

    # ---- the rest of ArtifactStore

    def exists(self, key: str) -> bool:
        check_key(key)
        return self._head(key) is not None

    def size(self, key: str) -> int:
        check_key(key)
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(key)
        return int(head["ContentLength"])

    def open_range(self, key: str, start: int, end: int | None) -> BinaryIO:
        check_key(key)
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"invalid range {start}-{end}")
        header = f"bytes={start}-{'' if end is None else end - 1}"  # HTTP ranges are inclusive
        with self._errors("GET", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=key, Range=header)
        return io.BufferedReader(_BodyRaw(resp["Body"], key), CHUNK_SIZE)  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        check_key(key)
        with self._errors("DELETE", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        logger.info("deleted %s", key)

    def list_keys(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        """Every object whose key starts with ``prefix``, in S3's lexicographic order, paginated."""
        check_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors("LIST"):
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.list_page_size}
            ):
                for obj in page.get("Contents", []):
                    yield obj["Key"], int(obj["Size"]), obj["LastModified"].astimezone(UTC)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A GET-only URL for this one object, valid ``expires_s`` seconds (SigV4, ``X-Amz-Expires``)."""
        check_key(key)
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise ValueError("expires_s must be between 1 second and 7 days")
        with self._errors("presign", key):
            url = self._presign_client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=expires_s,
                HttpMethod="GET",
            )
        return str(url)
