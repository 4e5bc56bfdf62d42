"""Local file I/O for the steps: atomic writes, JSON and array files, hashing.

Every output is written to a temporary file in its directory and moved into place, so a
step killed midway leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np


__all__ = ["write_atomic", "write_text_atomic", "write_json_atomic", "read_json", "save_npz_atomic", "load_npz",
           "json_default", "file_sha256", "save_figure_atomic", "write_report_outputs"]


def file_sha256(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays and tuples (reports hold them)."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` (byte-identical for identical arrays, so its hash is stable)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomic(path, write)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz``; object arrays are refused (they would unpickle)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_figure_atomic(path: Path, figure) -> None:
    """A matplotlib figure as PNG."""
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))


def write_report_outputs(out: Path, model, report: dict, markdown: str, figure) -> None:
    """``model.keras``, ``report.md``, ``pareto.png``, then ``report.json`` last.

    A reader that sees ``report.json`` sees a complete directory.
    """
    from lrf_core.model_io import save_model_atomic

    out.mkdir(parents=True, exist_ok=True)
    if model is not None:
        save_model_atomic(model, out / "model.keras")
    write_text_atomic(out / "report.md", markdown)
    if figure is not None:
        save_figure_atomic(out / "pareto.png", figure)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, default=json_default) + "\n")
