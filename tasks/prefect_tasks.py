"""The steps as Prefect tasks: retries for I/O, content-hash caching for deterministic work.

Every step's output directory is ``WORKSPACE/STEP/KEY``, where KEY hashes the step's
inputs (parameters and the upstream records, which pin files by sha256). A finished step
leaves ``record.json`` there. Deterministic steps cache on their inputs (Prefect's
``INPUTS`` policy, results persisted), so re-running a flow after a failure or with the
same inputs skips what finished; if a cached step's files were deleted, the cache is
refreshed instead of returning a record that points nowhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE
from pydantic import BaseModel

from tasks import steps
from tasks.files import write_json_atomic
from tasks.params import PipelineParams

__all__ = ["STEP_TASKS", "run_step"]

RECORD = "record.json"


def step_key(params: PipelineParams, step: str, *inputs: BaseModel) -> str:
    """A stable hash of what determines a step's output (its parameters and upstream records)."""
    payload = {"step": step, "params": params.model_dump(mode="json"),
               # "auto" resolved: the budgets it stands for are part of what the search and fine-tune do
               "recovery_budgets": params.search.resolved_recovery_budgets(),
               "inputs": [i.model_dump(mode="json") for i in inputs]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def step_dir(params: PipelineParams, step: str, *inputs: BaseModel) -> Path:
    return Path(params.workspace) / step / step_key(params, step, *inputs)


def _complete(out_dir: Path) -> bool:
    """A finished step directory: its record exists and every file it names is there with its size."""
    record = out_dir / RECORD
    if not record.exists():
        return False

    def refs(value):
        if isinstance(value, dict):
            if {"path", "sha256", "size"} <= set(value):
                yield value
            else:
                for v in value.values():
                    yield from refs(v)
        elif isinstance(value, list):
            for v in value:
                yield from refs(v)

    for ref in refs(json.loads(record.read_text())):
        path = Path(ref["path"])
        if not path.exists() or path.stat().st_size != ref["size"]:
            return False
    return True


def _recording(fn: Callable) -> Callable:
    """Run a step function and leave its record in ``out_dir`` (the completeness marker)."""
    def run(params: PipelineParams, *inputs, out_dir: Path, **options):
        out_dir.mkdir(parents=True, exist_ok=True)
        record = fn(params, *inputs, out_dir, **options)
        write_json_atomic(out_dir / RECORD, record.model_dump(mode="json"))
        return record

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _transient(task, task_run, state) -> bool:
    """Retry I/O only when another attempt can help: an unreachable endpoint or an unexpected error.

    lrflow's own errors name a bad input (a corrupt model, a missing bucket, missing
    credentials); repeating the call gives the same answer 15 s later. Throttling and 5xx
    responses are retried by botocore inside each attempt.
    """
    from lrf_core.errors import LRFError
    from tasks.s3io import S3EndpointError

    try:
        state.result()
    except S3EndpointError:
        return True
    except LRFError:
        return False
    except Exception:  # noqa: BLE001 - anything unforeseen (network, OS) may be transient
        return True
    return False


_IO = dict(retries=3, retry_delay_seconds=[1, 4, 10], retry_condition_fn=_transient)
_CACHED = dict(cache_policy=INPUTS, persist_result=True)

STEP_TASKS = {
    "fetch_model": task(name="fetch-model", cache_policy=NO_CACHE, **_IO)(_recording(steps.fetch_model)),
    "fetch_data": task(name="fetch-data", cache_policy=NO_CACHE, **_IO)(_recording(steps.fetch_data)),
    "check_data": task(name="check-data", **_CACHED)(_recording(steps.check_data)),
    "calibrate": task(name="calibrate", **_CACHED)(_recording(steps.calibrate)),
    # where the layers are fitted does not change the decision: not part of the cache key
    "search": task(name="search", cache_policy=INPUTS - "dask_address", persist_result=True)(_recording(steps.search)),
    "rebuild": task(name="rebuild", **_CACHED)(_recording(steps.rebuild)),
    "finetune": task(name="finetune", **_CACHED)(_recording(steps.finetune)),
    "gate": task(name="gate", **_CACHED)(_recording(steps.gate)),
}

check_registry_task = task(name="check-registry", cache_policy=NO_CACHE, **_IO)(steps.check_registry)
publish_task = task(name="publish", cache_policy=NO_CACHE, **_IO)(steps.publish)
promote_task = task(name="promote", cache_policy=NO_CACHE)(steps.promote)


def run_step(step: str, params: PipelineParams, *inputs: BaseModel, **options):
    """Submit step ``step``; refresh its cache when its output directory is incomplete.

    ``options`` are run settings that do not change the output (``dask_address`` for the
    search): they are passed to the step but are neither in the directory key nor the cache key.
    """
    out_dir = step_dir(params, step, *inputs)
    return STEP_TASKS[step].with_options(refresh_cache=not _complete(out_dir))(params, *inputs, out_dir=out_dir,
                                                                                **options)
