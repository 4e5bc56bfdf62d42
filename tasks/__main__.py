"""`python -m tasks STEP [--params params.yaml]`: run one pipeline step outside Prefect (DVC stages).

Reads the parameters from ``params.yaml`` (the whole file is one :class:`PipelineParams`),
the upstream records from ``WORKSPACE/UPSTREAM/record.json``, writes outputs and its own
record to ``WORKSPACE/STEP/``. The code that runs is the same as the Prefect tasks'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks import records, steps
from tasks.files import read_json, write_json_atomic
from tasks.params import load_params

#: step → (upstream steps in argument order, record type, whether the step takes an output directory)
STEPS = {
    "fetch_model": ((), records.ModelRecord, True),
    "fetch_data": ((), records.DataRecord, True),
    "check_data": (("fetch_model", "fetch_data"), records.CheckRecord, True),
    "calibrate": (("fetch_model", "fetch_data"), records.CalibrationRecord, True),
    "search": (("fetch_model", "fetch_data", "calibrate"), records.SearchRecord, True),
    "rebuild": (("fetch_model", "search"), records.ModelFileRecord, True),
    "finetune": (("fetch_model", "fetch_data", "calibrate", "rebuild"), records.FinetuneRecord, True),
    "gate": (("fetch_model", "fetch_data", "calibrate", "search", "finetune", "check_data"), records.GateRecord, True),
    "publish": (("gate",), records.PublishRecord, False),
    "promote": (("publish",), records.PromoteRecord, False),
}


def run(step: str, params_path: str) -> None:
    from lrf_core.errors import LRFError

    params = load_params(params_path)
    workspace = Path(params.workspace)
    upstream, _, takes_dir = STEPS[step]
    inputs = []
    for name in upstream:
        path = workspace / name / "record.json"
        if not path.exists():
            raise LRFError(f"Step `{step}` needs `{path}`: run `python -m tasks {name}` (or `dvc repro`) first.")
        inputs.append(STEPS[name][1].model_validate(read_json(path)))
    out_dir = workspace / step
    out_dir.mkdir(parents=True, exist_ok=True)
    function = getattr(steps, step)
    record = function(params, *inputs, out_dir) if takes_dir else function(params, *inputs)
    write_json_atomic(out_dir / "record.json", record.model_dump(mode="json"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks", description=__doc__)
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    from lrf_core.errors import LRFError

    try:
        run(args.step, args.params)
    except LRFError as exc:
        print(f"lrf: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
