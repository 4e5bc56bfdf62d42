"""Plain boto3 helpers: one S3 client, validated ``s3://`` URIs and keys, checked uploads and downloads.

Two kinds of functions live here, kept apart:

- pure helpers (URI parsing, key and bucket validation, key joining, sha256 of bytes, the
  mapping of botocore errors to :class:`~lrf_core.errors.LRFError` subclasses);
- I/O functions taking a boto3 S3 client first. Each does one request or one small, named
  sequence of requests, and raises one of the errors below, never a raw botocore error.

Every object lrflow writes carries its SHA-256 as an S3 additional checksum
(``ChecksumSHA256``): AWS S3 and MinIO recompute it from the received body, reject the
PUT when it differs, and echo the stored checksum in the response, which the put
functions compare with the bytes sent. :func:`head_object` reads it back, so a stored
object can be compared with a local file without downloading it. (The moto test server
stores the checksum it is sent without recomputing it.)

Credentials are never read, printed or logged here: boto3 finds them (environment, profile,
instance role), and error messages name the variables to set, not their values.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lrf_core.errors import LRFError

logger = logging.getLogger(__name__)

#: boto3 generates the S3 client class at run time, so there is no importable type to annotate with.
S3Client = Any

ENDPOINT_ENV = "AWS_ENDPOINT_URL"
LOCAL_S3_HINT = "start the local server with `infra/local/s3.sh start`, or check AWS_ENDPOINT_URL"
_CHUNK = 1 << 20


# -- errors -----------------------------------------------------------------------------------


class S3UriError(LRFError, ValueError):
    """An ``s3://`` URI, bucket name or object key that is malformed or unsafe."""


class S3Error(LRFError, OSError):
    """An S3 request that failed; the message names the object, the cause and the fix."""


class S3ConflictError(S3Error):
    """A conditional write lost: the object exists (If-None-Match) or changed (If-Match)."""


class S3NotFoundError(S3Error, FileNotFoundError):
    """The object does not exist."""


class S3BucketNotFoundError(S3Error, FileNotFoundError):
    """The bucket does not exist."""


class S3CredentialsError(S3Error, PermissionError):
    """No usable credentials were found, or S3 refused the ones given."""


class S3EndpointError(S3Error, ConnectionError):
    """The S3 endpoint could not be reached."""


class ChecksumMismatchError(S3Error):
    """Stored or downloaded bytes whose SHA-256 or size differs from the expected one."""


class LocalFileError(LRFError, OSError):
    """A local file that cannot be read for upload or written after download."""


# -- pure helpers: hashing ---------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_to_checksum(sha256_hex: str) -> str:
    """The base64 form S3 uses for ``ChecksumSHA256`` of a hex SHA-256 digest."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def checksum_to_sha256(checksum: str) -> Optional[str]:
    """Hex SHA-256 of an S3 ``ChecksumSHA256`` value; ``None`` for a composite (multipart) one."""
    if "-" in checksum:  # "<base64>-<parts>": a checksum of part checksums, not of the bytes
        return None
    return base64.b64decode(checksum).hex()


# -- pure helpers: names, keys, URIs -----------------------------------------------------------

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_KEY_BYTES = 1024


def validate_bucket_name(bucket: str) -> str:
    """Return ``bucket`` if it follows the S3 naming rules, else raise :class:`S3UriError`.

    Rules: 3-63 characters of lowercase letters, digits, dots and hyphens; starting and
    ending with a letter or digit; no ``..``; not an IPv4 address; no ``xn--`` prefix.
    """
    return _checked(bucket, _bucket_name_problem, "S3 bucket name",
                    "3-63 characters of lowercase letters, digits, '.' and '-', starting and ending with a letter "
                    "or digit (e.g. `lrflow-models`)")


def _checked(value: str, problem_of: Callable[[str], Optional[str]], what: str, expected: str) -> str:
    """``value`` if ``problem_of`` finds nothing wrong with it, else :class:`S3UriError` naming both."""
    problem = problem_of(value) if isinstance(value, str) else "it is not a string"
    if problem:
        raise S3UriError(f"Invalid {what} {value!r}: {problem}. Expected {expected}.")
    return value


def _bucket_name_problem(bucket: str) -> Optional[str]:
    if not 3 <= len(bucket) <= 63:
        return f"it has {len(bucket)} characters"
    if not _BUCKET_RE.fullmatch(bucket):
        return "it contains characters other than lowercase letters, digits, '.' and '-', or starts/ends with one"
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return "it contains '..', '.-' or '-.'"
    if bucket.startswith("xn--"):
        return "it starts with the reserved prefix 'xn--'"
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(bucket)
        return "it is formatted as an IP address"
    return None


def validate_key(key: str, *, what: str = "object key") -> str:
    """Return ``key`` if it is a safe, relative S3 object key, else raise :class:`S3UriError`.

    Safe means: non-empty, at most 1024 UTF-8 bytes, no leading ``/``, no trailing ``/``,
    no empty, ``.`` or ``..`` path segments, no backslashes and no control characters. These
    rules keep a key from escaping its prefix when it is mapped to a local path.
    """
    return _checked(key, _key_problem, what, "a relative path such as `models/digits/model.keras` (segments "
                    "separated by '/', no '..', no leading '/', no backslashes)")


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` without a trailing ``/``; ``""`` (the bucket root) is allowed."""
    stripped = prefix.rstrip("/") if isinstance(prefix, str) else prefix
    return stripped if stripped == "" else validate_key(stripped, what="prefix")


def _key_problem(key: str) -> Optional[str]:
    if not key:
        return "it is empty"
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        return f"it is longer than {_MAX_KEY_BYTES} bytes"
    if key.startswith("/"):
        return "it starts with '/' (keys are relative to the bucket)"
    if "\\" in key:
        return "it contains a backslash"
    if _CONTROL_RE.search(key):
        return "it contains a control character"
    segments = key.split("/")
    if ".." in segments or "." in segments:
        return "it contains a '.' or '..' path segment"
    if "" in segments:
        return "it contains an empty path segment ('//' or a trailing '/')"
    return None


def join_key(*parts: str) -> str:
    """Join key parts with ``/``, skipping empty parts (an empty prefix), and validate the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p and p.strip("/")))


@dataclass(frozen=True)
class S3Uri:
    """A validated ``s3://bucket/key`` location; ``key`` is ``""`` for the bucket itself."""

    bucket: str
    key: str = ""

    def __post_init__(self) -> None:
        validate_bucket_name(self.bucket)
        if self.key:
            validate_key(self.key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, *parts: str) -> S3Uri:
        """The URI of ``key/part/...`` (each part validated)."""
        return S3Uri(self.bucket, join_key(self.key, *parts))


def parse_s3_uri(uri: str, *, require_key: bool = False) -> S3Uri:
    """Parse ``s3://bucket[/key]`` into an :class:`S3Uri`, validating bucket and key.

    A trailing ``/`` (a "folder") is dropped. With ``require_key=True`` a URI naming only a
    bucket is refused.
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise S3UriError(f"Expected an S3 URI of the form `s3://BUCKET/KEY`. Received: {uri!r}.")
    bucket, _, key = uri[len("s3://"):].partition("/")
    key = key.rstrip("/")
    if require_key and not key:
        raise S3UriError(f"Expected an S3 URI naming an object, `s3://{bucket or 'BUCKET'}/KEY`. Received: {uri!r}.")
    return S3Uri(bucket, key)


def object_uri(bucket: str, key: Optional[str] = None) -> str:
    """``s3://bucket/key`` for messages (no validation)."""
    return f"s3://{bucket}/{key or ''}"


# -- pure helpers: errors -----------------------------------------------------------------------

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken",
               "InvalidToken", "AllAccessDisabled"}


def translate_error(exc: Exception, *, operation: str, bucket: str, key: Optional[str] = None,
                    endpoint: Optional[str] = None) -> S3Error:
    """Map a botocore exception raised by ``operation`` on ``bucket``/``key`` to an :class:`S3Error`.

    The message names the object, the cause and the fix. It never includes credentials
    (only botocore's error code and message, which carry none).
    """
    from botocore.exceptions import (  # local: keep `import tasks.s3io` cheap
        ClientError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = object_uri(bucket, key)
    target = endpoint or "the default AWS endpoint"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3CredentialsError(
            f"S3 {operation} on {where} failed: no AWS credentials found. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (any values work for the local server) or AWS_PROFILE."
        )
    if isinstance(exc, EndpointConnectionError):
        return S3EndpointError(f"S3 {operation} on {where} failed: cannot connect to {target}. "
                               f"To use the local S3, {LOCAL_S3_HINT}.")
    if isinstance(exc, HTTPClientError):  # the connection dropped or timed out mid-request
        return S3EndpointError(f"S3 {operation} on {where} failed: the connection to {target} was interrupted "
                               f"({type(exc).__name__}) after botocore's retries. Check that the server is up and "
                               "run again: a publish that stopped midway left no visible version.")
    if not isinstance(exc, ClientError):
        return S3Error(f"S3 {operation} on {where} failed against {target}: {exc}")
    code = _error_code(exc)
    message = exc.response.get("Error", {}).get("Message") or "no message"
    if code in _CONFLICT_CODES:
        return S3ConflictError(f"S3 {operation} on {where} lost a conditional write ({code}): the object was "
                               "created or changed by someone else since it was read. Re-read it and retry.")
    if code == "NoSuchBucket":
        return _bucket_missing(bucket, endpoint)
    if code in _NOT_FOUND_CODES:
        return S3NotFoundError(f"S3 object {where} does not exist.")
    if code in _AUTH_CODES:
        return S3CredentialsError(f"S3 {operation} on {where} was refused ({code}: {message}). Check the "
                                  "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and "
                                  "the bucket policy.")
    return S3Error(f"S3 {operation} on {where} failed ({code or 'error'}: {message}).")


def _bucket_missing(bucket: str, endpoint: Optional[str]) -> S3BucketNotFoundError:
    return S3BucketNotFoundError(
        f"S3 bucket `{bucket}` does not exist at {endpoint or 'the default AWS endpoint'}. Create it "
        f"(`aws s3 mb s3://{bucket}`; the local server creates $LRF_REGISTRY_BUCKET on start) or fix the "
        "bucket name (LRF_REGISTRY_BUCKET or --bucket)."
    )


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def s3_errors(client: S3Client, operation: str, bucket: str, key: Optional[str] = None) -> Iterator[None]:
    """Re-raise botocore errors inside the block as :class:`S3Error` subclasses (see :func:`translate_error`)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise translate_error(exc, operation=operation, bucket=bucket, key=key,
                              endpoint=client.meta.endpoint_url) from exc


# -- client -------------------------------------------------------------------------------------


def s3_client(endpoint_url: Optional[str] = None, *, session=None, max_attempts: int = 5,
              connect_timeout: float = 10.0) -> S3Client:
    """A boto3 S3 client for ``endpoint_url``, else ``$AWS_ENDPOINT_URL``, else AWS.

    ``session``: a ``boto3.session.Session`` holding credentials (from a Prefect
    ``AwsCredentials`` block, :mod:`tasks.credentials`); default: a new session, which finds
    credentials in the environment, a profile or an instance role.

    Retries use botocore's "standard" mode: ``max_attempts`` tries in all (botocore's own
    ``max_attempts`` key counts retries, so ``total_max_attempts`` is set), with exponential
    backoff, throttling and connection errors included. With a custom endpoint (moto,
    MinIO) path-style addressing is used, because those servers do not resolve
    ``BUCKET.host`` names. Each call builds its own boto3 session, so credentials and
    settings are read from the environment now, not cached from an earlier client, and
    clients can be used from different threads.
    """
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        s3={"addressing_style": "path"} if endpoint else None,
    )
    return (session or boto3.session.Session()).client("s3", endpoint_url=endpoint, config=config)


# -- I/O: objects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    """What S3 holds under one key: size, ETag and, when stored with one, the SHA-256."""

    bucket: str
    key: str
    size: int
    etag: str
    sha256: Optional[str]

    @property
    def uri(self) -> str:
        return object_uri(self.bucket, self.key)


@dataclass(frozen=True)
class StoredBytes:
    """An object's content and the ETag it had when read (the token for :func:`put_bytes_if_match`)."""

    data: bytes
    etag: str


def read_local_file(path: Path) -> bytes:
    """The bytes of a local file to upload; a missing or unreadable file raises :class:`LocalFileError`."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise LocalFileError(f"Cannot read {path} for upload: {exc.strerror or exc}. "
                             "Check that the file exists and is readable.") from exc


def put_bytes(client: S3Client, bucket: str, key: str, data: bytes) -> ObjectInfo:
    """Write ``data`` to ``key`` unconditionally (replacing any object) with its SHA-256 checksum."""
    return _put(client, bucket, key, data, "put_object", {})


def put_bytes_if_absent(client: S3Client, bucket: str, key: str, data: bytes) -> ObjectInfo:
    """Create ``key`` only if no object exists there (``If-None-Match: *``).

    The check and the write are one atomic step on S3, so of two concurrent creators exactly
    one succeeds; the other gets :class:`S3ConflictError`.
    """
    return _put(client, bucket, key, data, "put_object (if absent)", {"IfNoneMatch": "*"})


def put_bytes_if_match(client: S3Client, bucket: str, key: str, data: bytes, etag: str) -> ObjectInfo:
    """Replace ``key`` only if it still has ETag ``etag`` (``If-Match``); else :class:`S3ConflictError`.

    A missing object raises :class:`S3NotFoundError`.
    """
    return _put(client, bucket, key, data, "put_object (if match)", {"IfMatch": etag})


def _put(client: S3Client, bucket: str, key: str, data: bytes, operation: str,
         conditions: dict[str, str]) -> ObjectInfo:
    validate_bucket_name(bucket)
    validate_key(key)
    digest = sha256_bytes(data)
    with s3_errors(client, operation, bucket, key):
        # The algorithm header makes the store keep the checksum (HEAD returns it), not just check it.
        response = client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
                                     ChecksumSHA256=sha256_to_checksum(digest), **conditions)
    stored = response.get("ChecksumSHA256")
    if stored is not None and checksum_to_sha256(stored) != digest:
        raise ChecksumMismatchError(f"S3 stored {object_uri(bucket, key)} with sha256 {checksum_to_sha256(stored)}, "
                                    f"but the bytes sent have sha256 {digest}. Upload it again.")
    logger.debug("put %s (%d bytes, sha256 %s)", object_uri(bucket, key), len(data), digest)
    return ObjectInfo(bucket, key, len(data), response["ETag"], digest)


def upload_file(client: S3Client, bucket: str, key: str, path: Path) -> ObjectInfo:
    """Upload a local file to ``key`` (replacing any object); the returned sha256 is of the bytes sent."""
    return put_bytes(client, bucket, key, read_local_file(path))


def head_object(client: S3Client, bucket: str, key: str) -> ObjectInfo:
    """Size, ETag and stored SHA-256 of ``key`` (:class:`S3NotFoundError` if absent)."""
    from botocore.exceptions import ClientError

    validate_bucket_name(bucket)
    with s3_errors(client, "head_object", bucket, key):
        try:
            response = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            # HEAD responses have no body, so a missing bucket also reads "404": ask the bucket.
            if _error_code(exc) in ("404", "NotFound") and not _bucket_exists(client, bucket):
                raise _bucket_missing(bucket, client.meta.endpoint_url) from exc
            raise
    checksum = response.get("ChecksumSHA256")
    return ObjectInfo(bucket, key, int(response["ContentLength"]), response["ETag"],
                      checksum_to_sha256(checksum) if checksum else None)


def _bucket_exists(client: S3Client, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _error_code(exc) in ("404", "NotFound", "NoSuchBucket"):
            return False
        raise
    return True


def require_bucket(client: S3Client, bucket: str) -> None:
    """Raise the clear error when ``bucket`` is missing or unreachable (credentials, endpoint)."""
    validate_bucket_name(bucket)
    with s3_errors(client, "head_bucket", bucket):
        found = _bucket_exists(client, bucket)
    if not found:
        raise _bucket_missing(bucket, client.meta.endpoint_url)


def object_exists(client: S3Client, bucket: str, key: str) -> bool:
    """Whether ``key`` exists; a missing bucket raises :class:`S3BucketNotFoundError`, not ``False``."""
    try:
        head_object(client, bucket, key)
    except S3NotFoundError:
        return False
    return True


def verify_object(client: S3Client, bucket: str, key: str, *, sha256: str, size: int) -> ObjectInfo:
    """Check that ``key`` holds ``size`` bytes with SHA-256 ``sha256``, by one HEAD request.

    The size must match; the SHA-256 must match when the store kept a checksum (every
    object lrflow writes has one). Raises :class:`ChecksumMismatchError` naming both values.
    """
    info = head_object(client, bucket, key)
    if info.size != size or (info.sha256 is not None and info.sha256 != sha256):
        raise ChecksumMismatchError(
            f"{info.uri} does not hold the expected bytes: expected {size} bytes with sha256 {sha256}, "
            f"found {info.size} bytes with sha256 {info.sha256 or 'unknown'}."
        )
    if info.sha256 is None:
        logger.debug("%s has no stored SHA-256; verified its size only", info.uri)
    return info


def get_bytes(client: S3Client, bucket: str, key: str) -> StoredBytes:
    """The content of ``key`` and its ETag (:class:`S3NotFoundError` if absent)."""
    validate_bucket_name(bucket)
    with s3_errors(client, "get_object", bucket, key):
        response = client.get_object(Bucket=bucket, Key=key)
        data = response["Body"].read()
    return StoredBytes(data, response["ETag"])


def download_file(client: S3Client, bucket: str, key: str, dest: Path, *,
                  expected_sha256: Optional[str] = None) -> ObjectInfo:
    """Download ``key`` to ``dest`` atomically, verifying ``expected_sha256`` when given.

    The bytes go to a temporary file next to ``dest`` and are moved into place with
    ``os.replace`` only after the SHA-256 matched, so ``dest`` is either the old file or the
    complete, verified new one. A mismatch raises :class:`ChecksumMismatchError` and leaves
    ``dest`` untouched.
    """
    validate_bucket_name(bucket)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size, etag = _stream_object(client, bucket, key, out)
            out.flush()
            os.fsync(out.fileno())
        if expected_sha256 is not None and digest != expected_sha256:
            raise ChecksumMismatchError(
                f"{object_uri(bucket, key)} is corrupt or was modified: expected sha256 {expected_sha256}, "
                f"downloaded {size} bytes with sha256 {digest}. {dest} was not written."
            )
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return ObjectInfo(bucket, key, size, etag, digest)


def _stream_object(client: S3Client, bucket: str, key: str, out) -> tuple[str, int, str]:
    hasher, size = hashlib.sha256(), 0
    with s3_errors(client, "get_object", bucket, key):
        response = client.get_object(Bucket=bucket, Key=key)
        for chunk in response["Body"].iter_chunks(_CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size, response["ETag"]


def list_keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (all pages), in S3's lexicographic order."""
    validate_bucket_name(bucket)
    keys: list[str] = []
    with s3_errors(client, "list_objects_v2", bucket, prefix):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", ()))
    return keys


def ensure_bucket(client: S3Client, bucket: str) -> None:
    """Create ``bucket`` unless it exists (for local servers and tests; production buckets are infra's job)."""
    from botocore.exceptions import ClientError

    validate_bucket_name(bucket)
    region = client.meta.region_name
    # us-east-1 is the one region where S3 refuses an explicit LocationConstraint.
    extra = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region and region != "us-east-1" else {}
    with s3_errors(client, "create_bucket", bucket):
        try:
            client.create_bucket(Bucket=bucket, **extra)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise
