"""Read a results directory: the zoo's compare files in report order, and the optional parts (depth sweep,
ResNet-50, Dask), falling back on the quick run for the parts a full run has not done yet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from bench.common import BENCH, RESULTS_DIR

#: The zoo's models in report order (bench.harness.MODES["full"].models); any other model follows.
ZOO_ORDER = ("fashion_vgg", "fashion_resnet", "fashion_mobilenetv2")


#: Result files a full run may not have yet; the report then shows the quick run's, labelled as such.
FALLBACK_FILES = ("depth_sweep.json", "dask_search.json")


def load_results(directory: Path, fallback: Optional[Path] = None) -> dict:
    """Every result file of ``directory``; a file of :data:`FALLBACK_FILES` missing there is read from
    ``fallback`` (the quick run's directory) and marked with ``"_from": <its path>``."""
    directory = Path(directory)

    def read(name):
        path = directory / name
        if not path.exists() and fallback is not None and name in FALLBACK_FILES:
            path = Path(fallback) / name
            return {**json.loads(path.read_text()), "_from": project_relative(path)} if path.exists() else None
        return json.loads(path.read_text()) if path.exists() else None

    compare = {}
    for path in sorted(directory.glob("compare_*.json")):
        data = json.loads(path.read_text())
        compare[data["model"]] = data
    compare = dict(sorted(compare.items(), key=lambda kv: (ZOO_ORDER.index(kv[0]) if kv[0] in ZOO_ORDER else len(ZOO_ORDER),
                                                           kv[0])))
    return {"zoo": read("zoo.json"), "compare": compare, "depth": read("depth_sweep.json"),
            "scale": read("scale_resnet50.json"), "dask": read("dask_search.json")}


def relative_to(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)


def project_relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(BENCH.parent))
    except ValueError:
        return str(path)


def quick_fallback(results: Path) -> Optional[Path]:
    """The full results directory falls back on its quick run for the files of :data:`FALLBACK_FILES`."""
    return RESULTS_DIR / "quick" if Path(results).resolve() == RESULTS_DIR.resolve() else None
