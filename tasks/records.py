"""What each pipeline step returns: small, JSON-serialisable records (paths, hashes, counts).

Never a Keras model or an array: Prefect persists these as task results (so a re-run can
skip a finished step) and DVC-free readers can follow the lineage from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict

from tasks.files import file_sha256

__all__ = ["FileRef", "ModelRecord", "DataRecord", "CheckRecord", "CalibrationRecord", "SearchChoice",
           "SearchRecord", "RecoveryChild", "ModelFileRecord", "FinetuneRecord", "GateRecord", "PublishRecord", "PromoteRecord"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileRef(_Record):
    """A local file pinned by content."""

    path: str
    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path) -> "FileRef":
        path = Path(path)
        return cls(path=str(path), sha256=file_sha256(path), size=path.stat().st_size)


class ModelRecord(_Record):
    file: FileRef
    source: str
    name: str
    params: int
    macs: int
    input_shape: tuple[Optional[int], ...]


class DataRecord(_Record):
    source: str
    train: FileRef
    test: FileRef
    num_classes: int
    train_examples: int
    test_examples: int


class CheckRecord(_Record):
    suite: str
    success: bool
    result: FileRef
    docs_dir: Optional[str]
    failed: tuple[str, ...] = ()


class CalibrationRecord(_Record):
    calibration: FileRef
    stats: FileRef
    layers: tuple[str, ...]
    examples: int


class SearchChoice(_Record):
    """One choice of the search: the decision (JSON + arrays), its report and what it keeps."""

    decision: FileRef
    arrays: FileRef
    report: FileRef
    factorized: tuple[str, ...]
    params_kept: float
    macs_kept: float
    max_drop: Optional[float] = None  # the accuracy budget (points, before the fine-tune) it was chosen under


class SearchRecord(SearchChoice):
    """The choice at ``search.max_drop`` and, with ``search.recovery_budgets``, the choices at those, largest first."""

    recovery: tuple[SearchChoice, ...] = ()


class RecoveryChild(_Record):
    max_drop: float
    model: FileRef


class ModelFileRecord(_Record):
    model: FileRef
    params: int
    recovery: tuple[RecoveryChild, ...] = ()  # the recovery choices rebuilt, largest budget first


class FinetuneRecord(_Record):
    model: FileRef
    result: FileRef
    val_accuracy_before: float
    val_accuracy_after: float
    kept_max_drop: Optional[float] = None  # with recovery: the budget whose child was kept
    recovery: Optional[FileRef] = None  # with recovery: every attempt (recovery.json)


class GateRecord(_Record):
    passed: bool
    out_dir: str
    files: dict[str, FileRef]
    summary: dict


class PublishRecord(_Record):
    uri: str
    version: str
    status: str
    files: int


class PromoteRecord(_Record):
    alias: str
    version: Optional[str]
    promoted: bool
    reason: str
