"""The model registry on S3: immutable versions with a manifest, movable aliases with history.

Layout under ``s3://BUCKET/PREFIX/`` (``PREFIX`` may be empty)::

    models/NAME/versions/VERSION/<files>          model.keras, report.json, validation/..., any relative keys
    models/NAME/versions/VERSION/manifest.json    written LAST; a version exists iff its manifest exists
    models/NAME/aliases/ALIAS.json                {"alias", "version", "updated_at", "history": [...]}

Invariants:

- **Manifest last.** :func:`publish_version` uploads every file, verifies what S3 stored,
  and only then creates the manifest with ``If-None-Match: *``. Readers look at manifests
  only, so a publish that fails midway leaves nothing visible, and retrying it completes.
- **Immutable versions.** Files are created with ``If-None-Match: *`` too: a key that
  already holds *the same bytes* (a retried publish) is accepted, different bytes are
  refused. So no publish, concurrent or late, can change a file a manifest vouches for,
  and a second manifest for a version can never be written.
- **Aliases move by compare-and-swap.** An alias file is created with ``If-None-Match: *``
  and replaced with ``If-Match: <ETag read>``; of two concurrent moves exactly one wins,
  the other raises :class:`AliasConflictError`. Every move is appended to the history.

Model references for flows: ``registry:NAME@ALIAS`` (follow an alias) and
``registry:NAME/VERSION`` (a pinned version), as in MLflow's ``models:/NAME@ALIAS`` and
``models:/NAME/VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from lrf_core.errors import LRFError
from tasks import s3io
from tasks.s3io import S3Client

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STATUSES = ("passed", "rejected")
REF_SCHEME = "registry:"
DEFAULT_PREFIX = "lrflow"


# -- errors -----------------------------------------------------------------------------------


class RegistryError(LRFError, ValueError):
    """Base class of the registry's errors."""


class RegistryConfigError(RegistryError):
    """The registry location is missing or invalid."""


class RegistryNameError(RegistryError):
    """A model name, version, alias, file key or reference that is malformed or unsafe."""


class VersionExistsError(RegistryError):
    """The version is already published (or is being published with other bytes): versions are immutable."""


class VersionNotFoundError(RegistryError, LookupError):
    """No manifest exists for the version."""


class VersionRejectedError(RegistryError):
    """A version whose gate status is "rejected" cannot be promoted."""


class AliasNotFoundError(RegistryError, LookupError):
    """The alias does not exist for the model."""


class AliasConflictError(RegistryError):
    """The alias changed between reading it and writing it (a concurrent promote or rollback)."""


class NoPreviousVersionError(RegistryError):
    """A rollback with nothing to roll back to."""


class ManifestError(RegistryError):
    """A stored manifest or alias file that is not valid JSON of the expected schema."""


# -- documents ----------------------------------------------------------------------------------


class FileEntry(BaseModel):
    """One stored file of a version: SHA-256 (hex) and size in bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """``manifest.json`` of a version: what was published, its gate verdict and lineage.

    ``files`` lists every object of the version (relative key → sha256, size); the manifest
    itself is not in it. ``gate`` and ``lineage`` are the caller's dicts (verdict summary;
    parent model and calibration set sha256, params, lrflow and library versions).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    name: str
    version: str
    created_at: AwareDatetime
    status: Literal["passed", "rejected"]
    gate: dict[str, Any]
    files: dict[str, FileEntry]
    lineage: dict[str, Any]

    # A manifest read from S3 is input: its keys become local paths on download, so they are
    # held to the same rules as on publish (no `..`, nothing absolute).
    @field_validator("files")
    @classmethod
    def _safe_keys(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for key in files:
            validate_file_key(key)
        return files

    @field_validator("name", "version")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return validate_name(value, what="name or version")


class AliasEvent(BaseModel):
    """One move of an alias."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    updated_at: AwareDatetime
    action: Literal["promote", "rollback"]


class Alias(BaseModel):
    """``aliases/ALIAS.json``: the version an alias points at and every move so far (oldest first)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str
    version: str
    updated_at: AwareDatetime
    history: list[AliasEvent]


@dataclass(frozen=True)
class VersionRecord:
    """A published version, as listed: where it is, its status, when, how many files and bytes."""

    name: str
    version: str
    status: str
    created_at: datetime
    uri: str
    files: int
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "status": self.status,
                "created_at": _iso(self.created_at), "uri": self.uri, "files": self.files, "size": self.size}


@dataclass(frozen=True)
class VersionDetails:
    """A version's manifest and the aliases pointing at it."""

    manifest: Manifest
    uri: str
    aliases: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.manifest.name, "version": self.manifest.version, "uri": self.uri,
                "aliases": list(self.aliases), "manifest": self.manifest.model_dump(mode="json")}


@dataclass(frozen=True)
class ModelSummary:
    """A model with at least one published version: its versions (sorted) and aliases → versions."""

    name: str
    versions: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "versions": list(self.versions), "aliases": dict(self.aliases)}


# -- configuration and references ---------------------------------------------------------------


@dataclass(frozen=True)
class RegistryConfig:
    """Where the registry lives: ``s3://bucket/prefix/`` at ``endpoint_url`` (``None``: AWS)."""

    bucket: str
    prefix: str = DEFAULT_PREFIX
    endpoint_url: Optional[str] = None

    def __post_init__(self) -> None:
        try:
            s3io.validate_bucket_name(self.bucket)
            object.__setattr__(self, "prefix", s3io.validate_prefix(self.prefix))
        except s3io.S3UriError as exc:
            raise RegistryConfigError(f"Invalid registry location: {exc}") from exc

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> RegistryConfig:
        """Read ``LRF_REGISTRY_BUCKET`` (required), ``LRF_REGISTRY_PREFIX`` and ``AWS_ENDPOINT_URL``."""
        env = os.environ if environ is None else environ
        bucket = env.get("LRF_REGISTRY_BUCKET", "")
        if not bucket:
            raise RegistryConfigError(
                "No registry bucket configured. Set LRF_REGISTRY_BUCKET (e.g. after "
                "`eval \"$(infra/local/s3.sh start)\"`) or pass --bucket."
            )
        return cls(bucket, env.get("LRF_REGISTRY_PREFIX", DEFAULT_PREFIX), env.get("AWS_ENDPOINT_URL") or None)

    @property
    def uri(self) -> str:
        return s3io.object_uri(self.bucket, f"{self.prefix}/" if self.prefix else "")


@dataclass(frozen=True)
class RegistryRef:
    """``registry:NAME@ALIAS`` (follow an alias) or ``registry:NAME/VERSION`` (pinned); exactly one is set."""

    name: str
    alias: Optional[str] = None
    version: Optional[str] = None

    def __post_init__(self) -> None:
        validate_name(self.name)
        if (self.alias is None) == (self.version is None):
            raise RegistryNameError(f"A registry reference needs exactly one of alias and version. "
                                    f"Received: alias={self.alias!r}, version={self.version!r}.")
        if self.alias is not None:
            validate_alias(self.alias)
        else:
            validate_version(self.version)

    def __str__(self) -> str:
        return f"{REF_SCHEME}{self.name}@{self.alias}" if self.alias else f"{REF_SCHEME}{self.name}/{self.version}"


def is_registry_ref(text: str) -> bool:
    """Whether ``text`` uses the ``registry:`` scheme (it may still be malformed)."""
    return isinstance(text, str) and text.startswith(REF_SCHEME)


def parse_registry_ref(text: str) -> RegistryRef:
    """Parse ``registry:NAME@ALIAS`` or ``registry:NAME/VERSION``."""
    if not is_registry_ref(text):
        raise RegistryNameError(f"Expected a registry reference `registry:NAME@ALIAS` or `registry:NAME/VERSION`. "
                                f"Received: {text!r}.")
    body = text[len(REF_SCHEME):]
    name, at, alias = body.partition("@")
    if at:
        return RegistryRef(name, alias=alias)
    name, slash, version = body.partition("/")
    if slash:
        return RegistryRef(name, version=version)
    raise RegistryNameError(f"Registry reference {text!r} names no alias or version. Expected "
                            f"`{REF_SCHEME}{body}@production` or `{REF_SCHEME}{body}/VERSION`.")


# -- pure: validation and keys ------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._+=@,~%-]+")


def validate_name(name: str, *, what: str = "model name") -> str:
    """A model name or version: 1-128 of ``A-Z a-z 0-9 . _ -``, starting alphanumeric, no ``..``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise RegistryNameError(f"Invalid {what} {name!r}: expected 1-128 characters of letters, digits, '.', '_' "
                                "and '-', starting with a letter or digit, without '..' (e.g. `digits-cnn`).")
    return name


def validate_version(version: str) -> str:
    """A version id (same rules as a model name)."""
    return validate_name(version, what="version")


def validate_alias(alias: str) -> str:
    """An alias: 1-64 of ``a-z 0-9 _ -``, starting with a letter (e.g. ``production``)."""
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
        raise RegistryNameError(f"Invalid alias {alias!r}: expected 1-64 lowercase letters, digits, '_' and '-', "
                                "starting with a letter (e.g. `production`, `staging`).")
    return alias


def validate_file_key(key: str) -> str:
    """A file's key relative to its version directory, e.g. ``validation/docs/index.html``.

    Segments use ``A-Z a-z 0-9 . _ + = @ , ~ % -``; no ``.``/``..`` segments, no leading
    ``/``, no backslashes; ``manifest.json`` at the top is reserved for the manifest.
    """
    segments = key.split("/") if isinstance(key, str) else [None]
    bad = (not segments or any(s is None or s in (".", "..") or not _SEGMENT_RE.fullmatch(s) for s in segments)
           or key == MANIFEST_NAME)
    if bad:
        reason = "it is reserved for the manifest" if key == MANIFEST_NAME else (
            "expected '/'-separated segments of letters, digits and `._+=@,~%-`, without '.' or '..' segments, "
            "a leading '/' or backslashes")
        raise RegistryNameError(f"Invalid file key {key!r} for a registry version: {reason}.")
    return key


def model_key(prefix: str, name: str) -> str:
    """``PREFIX/models/NAME``."""
    return s3io.join_key(prefix, "models", name)


def version_key(prefix: str, name: str, version: str) -> str:
    """``PREFIX/models/NAME/versions/VERSION``: the directory of one version."""
    return s3io.join_key(model_key(prefix, name), "versions", version)


def manifest_key(prefix: str, name: str, version: str) -> str:
    """``.../versions/VERSION/manifest.json``."""
    return s3io.join_key(version_key(prefix, name, version), MANIFEST_NAME)


def alias_key(prefix: str, name: str, alias: str) -> str:
    """``PREFIX/models/NAME/aliases/ALIAS.json``."""
    return s3io.join_key(model_key(prefix, name), "aliases", f"{alias}.json")


# -- pure: manifests, versions, aliases ---------------------------------------------------------


def content_version_of(entries: Mapping[str, FileEntry]) -> str:
    """Deterministic version id: the first 12 hex digits of the SHA-256 of the sorted file list.

    The list is one ``key<TAB>sha256<TAB>size`` line per file, so identical content gives the
    same id and any change to a file, a key or the set of files gives another.
    """
    listing = "".join(f"{key}\t{e.sha256}\t{e.size}\n" for key, e in sorted(entries.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()[:12]


def validate_status(status: str) -> str:
    """A gate status: "passed" or "rejected"."""
    if status not in STATUSES:
        raise RegistryError(f"Invalid status {status!r}: expected one of {', '.join(STATUSES)}.")
    return status


def build_manifest(name: str, version: str, entries: Mapping[str, FileEntry], *, status: str,
                   gate: Mapping[str, Any], lineage: Mapping[str, Any], created_at: datetime) -> Manifest:
    """The manifest of a version (validates ``status`` and that ``gate``/``lineage`` are JSON)."""
    validate_status(status)
    for label, value in (("gate", gate), ("lineage", lineage)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"The {label} summary must be plain JSON (str, numbers, lists, dicts): {exc}.") \
                from exc
    return Manifest(name=name, version=version, created_at=created_at, status=status, gate=dict(gate),
                    files=dict(sorted(entries.items())), lineage=dict(lineage))


def to_json_bytes(document: BaseModel) -> bytes:
    """Canonical JSON of a manifest or alias (sorted keys, 2-space indent, UTF-8, final newline)."""
    return (json.dumps(document.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_manifest(data: bytes, *, name: str, version: str, uri: str) -> Manifest:
    """Parse and check a stored manifest: schema, and that it describes ``name``/``version``."""
    raw = _load_json(data, uri)
    if isinstance(raw, dict) and raw.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ManifestError(f"{uri} has schema_version {raw.get('schema_version')!r}; this lrflow reads "
                            f"version {MANIFEST_SCHEMA_VERSION}. Upgrade lrflow to read it.")
    manifest = _validate(Manifest, raw, uri)
    if (manifest.name, manifest.version) != (name, version):
        raise ManifestError(f"{uri} describes {manifest.name}/{manifest.version}, not {name}/{version}; "
                            "the registry was edited by hand.")
    return manifest


def parse_alias(data: bytes, *, alias: str, uri: str) -> Alias:
    """Parse and check a stored alias file."""
    document = _validate(Alias, _load_json(data, uri), uri)
    if document.alias != alias:
        raise ManifestError(f"{uri} describes alias {document.alias!r}, not {alias!r}; "
                            "the registry was edited by hand.")
    return document


def _load_json(data: bytes, uri: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{uri} is not valid JSON ({exc}).") from exc


def _validate(model: type[BaseModel], raw: Any, uri: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "document"
        raise ManifestError(f"{uri} is not a valid {model.__name__} ({where}: {first['msg']}).") from exc


def alias_stack(history: Sequence[AliasEvent]) -> list[str]:
    """The versions a rollback walks back through: each promote pushes, each rollback pops.

    After promote v1, v2, v3 the stack is ``[v1, v2, v3]``; one rollback gives ``[v1, v2]``
    (the alias is at v2), a second ``[v1]``. The last element is the current version.
    """
    stack: list[str] = []
    for event in history:
        if event.action == "promote":
            stack.append(event.version)
        elif stack:
            stack.pop()
    return stack


def moved_alias(current: Optional[Alias], alias: str, version: str, action: str, now: datetime) -> Alias:
    """``current`` moved to ``version`` by ``action``, with the move appended to its history."""
    event = AliasEvent(version=version, updated_at=now, action=action)
    history = [*current.history, event] if current else [event]
    return Alias(alias=alias, version=version, updated_at=now, history=history)


def rollback_target(current: Alias, *, name: str) -> str:
    """The version before the current one on the alias's stack (:class:`NoPreviousVersionError` if none)."""
    stack = alias_stack(current.history)
    if len(stack) < 2:
        raise NoPreviousVersionError(
            f"Alias `{current.alias}` of model `{name}` has no previous version to roll back to (it points at "
            f"{current.version}). Promote another version instead: `lrf registry promote {name} VERSION "
            f"--alias {current.alias}`."
        )
    return stack[-2]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# -- I/O: local files ---------------------------------------------------------------------------


def hash_files(files: Mapping[str, Path]) -> dict[str, FileEntry]:
    """SHA-256 and size of each local file, keyed by its (validated) relative key."""
    for key in files:
        validate_file_key(key)
    entries = {}
    for key, path in files.items():
        data = s3io.read_local_file(Path(path))
        entries[key] = FileEntry(sha256=s3io.sha256_bytes(data), size=len(data))
    return entries


def content_version(files: Mapping[str, Path]) -> str:
    """:func:`content_version_of` the local files: identical files give the same version id."""
    return content_version_of(hash_files(files))


# -- I/O: publish -------------------------------------------------------------------------------


def publish_version(client: S3Client, bucket: str, prefix: str, name: str, version: str,
                    files: Mapping[str, Path], *, status: str, gate: Mapping[str, Any],
                    lineage: Mapping[str, Any], exist_ok: bool = False) -> VersionRecord:
    """Publish ``files`` as version ``version`` of model ``name``; the manifest is written last.

    Steps: validate everything and hash the local files; refuse if the manifest exists
    (:class:`VersionExistsError`: versions are immutable); create each file with
    ``If-None-Match: *`` and its SHA-256 as the S3 checksum, which the store verifies (a key
    already holding the same bytes, left by an earlier failed attempt, is accepted after a
    HEAD shows the same size and SHA-256; different bytes are refused); then create the
    manifest with ``If-None-Match: *``, and if another publish created it first, raise
    :class:`VersionExistsError`. A failure before the manifest leaves the version invisible,
    and calling again with the same files completes it.

    With ``exist_ok=True`` an existing version whose files and status equal these is
    returned instead of raising (re-running a flow on identical content); any difference
    still raises.
    """
    s3io.validate_bucket_name(bucket)
    validate_name(name)
    validate_version(version)
    validate_status(status)
    prefix = s3io.validate_prefix(prefix)
    if not files:
        raise RegistryError(f"Nothing to publish for {name}/{version}: `files` is empty.")
    entries = hash_files(files)
    manifest = build_manifest(name, version, entries, status=status, gate=gate, lineage=lineage, created_at=_now())
    existing = _existing_manifest(client, bucket, prefix, name, version)
    if existing is not None:
        return _accept_existing(existing, manifest, bucket, prefix, exist_ok)
    root = version_key(prefix, name, version)
    for key in sorted(entries):
        _upload_immutable(client, bucket, s3io.join_key(root, key), Path(files[key]), entries[key])
    body = to_json_bytes(manifest)
    key = manifest_key(prefix, name, version)
    try:
        s3io.put_bytes_if_absent(client, bucket, key, body)
    except s3io.S3ConflictError as exc:
        if not _holds(client, bucket, key, body):
            raise _version_exists(bucket, prefix, name, version) from exc
    logger.info("published %s/%s (%s, %d files)", name, version, status, len(entries))
    return _record(manifest, bucket, prefix)


def _holds(client: S3Client, bucket: str, key: str, body: bytes) -> bool:
    """Whether ``key`` holds exactly ``body``.

    A conditional write whose response was lost is retried by botocore, and the retry then
    fails its own precondition; byte equality (the document carries our timestamp) tells
    "our first attempt landed" from "someone else won".
    """
    try:
        return s3io.get_bytes(client, bucket, key).data == body
    except s3io.S3NotFoundError:
        return False


def _existing_manifest(client: S3Client, bucket: str, prefix: str, name: str, version: str) -> Optional[Manifest]:
    try:
        return read_manifest(client, bucket, prefix, name, version)
    except VersionNotFoundError:
        return None


def _accept_existing(existing: Manifest, wanted: Manifest, bucket: str, prefix: str, exist_ok: bool) -> VersionRecord:
    same = existing.files == wanted.files and existing.status == wanted.status
    if exist_ok and same:
        logger.info("%s/%s already published with identical files", existing.name, existing.version)
        return _record(existing, bucket, prefix)
    raise _version_exists(bucket, prefix, existing.name, existing.version,
                          detail="" if same else " with different files or status")


def _version_exists(bucket: str, prefix: str, name: str, version: str, detail: str = "") -> VersionExistsError:
    uri = s3io.object_uri(bucket, manifest_key(prefix, name, version))
    return VersionExistsError(f"Version {version} of model `{name}` is already published{detail} ({uri}). "
                              "Versions are immutable: publish under another version, e.g. the content "
                              "version of the files (tasks.registry.content_version).")


def _upload_immutable(client: S3Client, bucket: str, key: str, path: Path, entry: FileEntry) -> None:
    """Create ``key`` with the bytes of ``path`` unless it already holds exactly those bytes.

    A created object is verified by the store (it checks the body against the SHA-256 sent and
    echoes it back, see :func:`tasks.s3io.put_bytes_if_absent`); an existing one, left by an
    earlier attempt, is accepted only if a HEAD shows the same size and SHA-256.
    """
    data = s3io.read_local_file(path)
    if s3io.sha256_bytes(data) != entry.sha256:
        raise s3io.LocalFileError(f"{path} changed while it was being published (sha256 differs from the one "
                                  "hashed at the start). Publish again once the file is final.")
    try:
        s3io.put_bytes_if_absent(client, bucket, key, data)
        return
    except s3io.S3ConflictError:
        pass
    try:
        s3io.verify_object(client, bucket, key, sha256=entry.sha256, size=entry.size)
    except s3io.ChecksumMismatchError as exc:
        raise VersionExistsError(
            f"{s3io.object_uri(bucket, key)} already holds other bytes, left by another publish of the same "
            "version (running now, or failed earlier). Versions are immutable: publish under another version "
            "(the content version of the files changes with them)."
        ) from exc


def _version_uri(bucket: str, prefix: str, name: str, version: str) -> str:
    return s3io.object_uri(bucket, version_key(prefix, name, version) + "/")


def _record(manifest: Manifest, bucket: str, prefix: str) -> VersionRecord:
    return VersionRecord(
        name=manifest.name, version=manifest.version, status=manifest.status, created_at=manifest.created_at,
        uri=_version_uri(bucket, prefix, manifest.name, manifest.version),
        files=len(manifest.files), size=sum(e.size for e in manifest.files.values()),
    )


# -- I/O: read ----------------------------------------------------------------------------------


def read_manifest(client: S3Client, bucket: str, prefix: str, name: str, version: str) -> Manifest:
    """The manifest of ``name``/``version`` (:class:`VersionNotFoundError` if it is not published)."""
    validate_name(name)
    validate_version(version)
    key = manifest_key(s3io.validate_prefix(prefix), name, version)
    try:
        stored = s3io.get_bytes(client, bucket, key)
    except s3io.S3NotFoundError as exc:
        raise VersionNotFoundError(f"Model `{name}` has no published version {version} (no "
                                   f"{s3io.object_uri(bucket, key)}). `lrf registry list {name}` shows its versions.") \
            from exc
    return parse_manifest(stored.data, name=name, version=version, uri=s3io.object_uri(bucket, key))


def list_models(client: S3Client, bucket: str, prefix: str) -> list[ModelSummary]:
    """Models with at least one published version (files without a manifest are ignored), by name."""
    prefix = s3io.validate_prefix(prefix)
    root = s3io.join_key(prefix, "models") + "/"
    versions: dict[str, list[str]] = {}
    aliases: dict[str, list[str]] = {}
    for key in s3io.list_keys(client, bucket, root):
        parts = key[len(root):].split("/")
        if len(parts) == 4 and parts[1] == "versions" and parts[3] == MANIFEST_NAME:
            versions.setdefault(parts[0], []).append(parts[2])
        elif len(parts) == 3 and parts[1] == "aliases" and parts[2].endswith(".json"):
            aliases.setdefault(parts[0], []).append(parts[2][: -len(".json")])
    return [ModelSummary(name, tuple(sorted(found)),
                         {a: resolve(client, bucket, prefix, name, a) for a in sorted(aliases.get(name, ()))})
            for name, found in sorted(versions.items())]


def list_versions(client: S3Client, bucket: str, prefix: str, name: str) -> list[VersionRecord]:
    """Published versions of ``name`` (those with a manifest), oldest first, with status and created_at."""
    validate_name(name)
    prefix = s3io.validate_prefix(prefix)
    root = s3io.join_key(model_key(prefix, name), "versions") + "/"
    found = [key[len(root):].split("/")[0] for key in s3io.list_keys(client, bucket, root)
             if key.endswith("/" + MANIFEST_NAME) and key[len(root):].count("/") == 1]
    records = [_record(read_manifest(client, bucket, prefix, name, v), bucket, prefix) for v in found]
    return sorted(records, key=lambda r: (r.created_at, r.version))


def read_aliases(client: S3Client, bucket: str, prefix: str, name: str) -> dict[str, Alias]:
    """Every alias of ``name``, by alias name."""
    validate_name(name)
    root = s3io.join_key(model_key(s3io.validate_prefix(prefix), name), "aliases") + "/"
    documents = {}
    for key in s3io.list_keys(client, bucket, root):
        alias = key[len(root):].removesuffix(".json")
        if key.endswith(".json") and _ALIAS_RE.fullmatch(alias):
            documents[alias] = read_alias(client, bucket, prefix, name, alias)
    return documents


def read_alias(client: S3Client, bucket: str, prefix: str, name: str, alias: str) -> Alias:
    """The alias document (:class:`AliasNotFoundError` if the alias does not exist)."""
    found = _read_alias_or_none(client, bucket, prefix, name, alias)
    if found is None:
        raise _alias_missing(name, alias)
    return found[0]


def _alias_missing(name: str, alias: str) -> AliasNotFoundError:
    return AliasNotFoundError(f"Model `{name}` has no alias `{alias}`. Create it with "
                              f"`lrf registry promote {name} VERSION --alias {alias}`.")


def find_alias(client: S3Client, bucket: str, prefix: str, name: str, alias: str) -> Optional[Alias]:
    """The alias document, or ``None`` if the alias does not exist."""
    found = _read_alias_or_none(client, bucket, prefix, name, alias)
    return None if found is None else found[0]


def _read_alias_or_none(client: S3Client, bucket: str, prefix: str, name: str,
                        alias: str) -> Optional[tuple[Alias, str]]:
    """The alias document and its ETag, or ``None`` if it does not exist."""
    validate_name(name)
    validate_alias(alias)
    key = alias_key(s3io.validate_prefix(prefix), name, alias)
    try:
        stored = s3io.get_bytes(client, bucket, key)
    except s3io.S3NotFoundError:
        return None
    return parse_alias(stored.data, alias=alias, uri=s3io.object_uri(bucket, key)), stored.etag


def show_version(client: S3Client, bucket: str, prefix: str, name: str, version: str) -> VersionDetails:
    """The manifest of ``name``/``version`` and the aliases that point at it."""
    manifest = read_manifest(client, bucket, prefix, name, version)
    pointing = tuple(a for a, doc in sorted(read_aliases(client, bucket, prefix, name).items())
                     if doc.version == version)
    return VersionDetails(manifest, _version_uri(bucket, s3io.validate_prefix(prefix), name, version), pointing)


def resolve(client: S3Client, bucket: str, prefix: str, name: str, alias: str) -> str:
    """The version ``alias`` points at (:class:`AliasNotFoundError` if it does not exist)."""
    return read_alias(client, bucket, prefix, name, alias).version


def resolve_ref(client: S3Client, bucket: str, prefix: str, ref: RegistryRef) -> str:
    """The version a reference names: its pinned version, or the alias's current version.

    A pinned version is checked to be published (:class:`VersionNotFoundError` otherwise).
    """
    if ref.version is not None:
        read_manifest(client, bucket, prefix, ref.name, ref.version)
        return ref.version
    return resolve(client, bucket, prefix, ref.name, ref.alias)


def download_version(client: S3Client, bucket: str, prefix: str, name: str, version: str, dest_dir: Path) -> Path:
    """Download every file of a version, plus its manifest, into ``dest_dir``; all or nothing.

    Each file's SHA-256 is checked against the manifest (:class:`~tasks.s3io.ChecksumMismatchError`
    on a tampered or corrupt object). Files land in a temporary sibling directory that is
    renamed to ``dest_dir`` only when all are verified; ``dest_dir`` must not exist or be empty.
    """
    manifest = read_manifest(client, bucket, prefix, name, version)
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise s3io.LocalFileError(f"Cannot download {name}/{version} into {dest_dir}: it exists and is not an "
                                  "empty directory. Choose a new directory.")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix=f".{dest_dir.name}.", suffix=".part"))
    try:
        root = version_key(s3io.validate_prefix(prefix), name, version)
        for key, entry in manifest.files.items():
            s3io.download_file(client, bucket, s3io.join_key(root, key), staging.joinpath(*key.split("/")),
                               expected_sha256=entry.sha256)
        (staging / MANIFEST_NAME).write_bytes(to_json_bytes(manifest))
        os.replace(staging, dest_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest_dir


# -- I/O: aliases -------------------------------------------------------------------------------


def promote(client: S3Client, bucket: str, prefix: str, name: str, alias: str, version: str, *,
            before_write: Optional[Callable[[], None]] = None) -> Alias:
    """Point ``alias`` at ``version`` (which must be published with status "passed"); return the new alias.

    The alias file is read, then written back with the move appended to its history, by a
    conditional write: created with ``If-None-Match: *`` when absent, replaced with
    ``If-Match: <ETag read>`` otherwise. If another writer moved the alias in between,
    :class:`AliasConflictError` is raised and nothing is written; promote never retries by
    itself, so the caller sees the conflict. Promoting the version the alias already points
    at changes nothing. ``before_write`` is called between the read and the write (a test seam
    for forcing races).
    """
    validate_alias(alias)
    manifest = read_manifest(client, bucket, prefix, name, version)
    if manifest.status != "passed":
        raise VersionRejectedError(
            f"Version {version} of model `{name}` has status `{manifest.status}` (it failed the gate) and cannot "
            f"be promoted to `{alias}`. Promote a version whose status is `passed` (`lrf registry list {name}`)."
        )
    found = _read_alias_or_none(client, bucket, prefix, name, alias)
    if found is not None and found[0].version == version:
        return found[0]
    return _move_alias(client, bucket, prefix, name, alias, found, version, "promote", before_write)


def rollback(client: S3Client, bucket: str, prefix: str, name: str, alias: str, *,
             before_write: Optional[Callable[[], None]] = None) -> Alias:
    """Move ``alias`` back to the version it pointed at before the current one; return the new alias.

    "Before" follows the alias's stack (see :func:`alias_stack`), so repeated rollbacks walk
    further back. Same conditional write and :class:`AliasConflictError` as :func:`promote`;
    :class:`NoPreviousVersionError` when there is nothing to go back to.
    """
    found = _read_alias_or_none(client, bucket, prefix, name, alias)
    if found is None:
        raise _alias_missing(name, alias)
    target = rollback_target(found[0], name=name)
    read_manifest(client, bucket, prefix, name, target)  # versions are immutable: a sanity check, not a race
    return _move_alias(client, bucket, prefix, name, alias, found, target, "rollback", before_write)


def _move_alias(client: S3Client, bucket: str, prefix: str, name: str, alias: str,
                found: Optional[tuple[Alias, str]], version: str, action: str,
                before_write: Optional[Callable[[], None]]) -> Alias:
    current, etag = found if found is not None else (None, None)
    document = moved_alias(current, alias, version, action, _now())
    key = alias_key(s3io.validate_prefix(prefix), name, alias)
    if before_write is not None:
        before_write()
    body = to_json_bytes(document)
    try:
        if etag is None:
            s3io.put_bytes_if_absent(client, bucket, key, body)
        else:
            s3io.put_bytes_if_match(client, bucket, key, body, etag)
    except (s3io.S3ConflictError, s3io.S3NotFoundError) as exc:  # NotFound: deleted since it was read
        if _holds(client, bucket, key, body):
            return document
        raise AliasConflictError(
            f"Alias `{alias}` of model `{name}` changed while moving it to {version} ({action}): another "
            "promote or rollback won. Re-read it (`lrf registry show`) and retry if still wanted."
        ) from exc
    logger.info("%s: alias %s of %s -> %s", action, alias, name, version)
    return document
