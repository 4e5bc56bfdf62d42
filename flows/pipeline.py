"""The Prefect flows: ``compress_model`` (one model, seven stages) and ``compress_fleet`` (many).

fetch → check data (Great Expectations) → calibrate → search → rebuild → fine-tune →
gate (+ Great Expectations) → publish (always: passed or rejected) → promote (only if passed).
A failing data check or a missed search target stops the flow before anything is published.
"""

# No `from __future__ import annotations`: Prefect builds the flows' parameter models (the UI
# form) from the real annotations, also in Dask workers that unpickle the flow.
from pathlib import Path
from typing import Optional

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.params import PipelineParams
from tasks.prefect_tasks import check_registry_task, promote_task, publish_task, run_step

__all__ = ["compress_model", "compress_fleet", "fleet_flow", "load_fleet"]


@flow(name="compress-model", log_prints=True)
def compress_model(params: PipelineParams, dask_address: Optional[str] = None) -> dict:
    """Compress one model, gate it, publish it, and promote it when the gate passed.

    ``dask_address``: fit the search's layers on that Dask cluster (same decision, see ``tasks.distributed``).
    """
    check_registry_task(params)
    model = run_step("fetch_model", params)
    data = run_step("fetch_data", params)
    check = run_step("check_data", params, model, data)
    calibration = run_step("calibrate", params, model, data)
    searched = run_step("search", params, model, data, calibration, dask_address=dask_address)
    child = run_step("rebuild", params, model, searched)
    tuned = run_step("finetune", params, model, data, calibration, child)
    gated = run_step("gate", params, model, data, calibration, searched, tuned, check)
    published = publish_task(params, gated)
    promoted = promote_task(params, published)
    _publish_artifacts(params, gated, published, promoted)
    return {
        "name": params.name, "passed": gated.passed, "version": published.version, "status": published.status,
        "uri": published.uri, "alias": promoted.alias, "promoted": promoted.promoted, "promotion": promoted.reason,
        "report_dir": gated.out_dir, "summary": gated.summary,
    }


def _publish_artifacts(params: PipelineParams, gated, published, promoted) -> None:
    key = params.name.lower().replace("_", "-").replace(".", "-")
    report = Path(gated.files["report.md"].path).read_text()
    create_markdown_artifact(key=f"{key}-report", markdown=report,
                             description=f"lrflow report for {params.name} {published.version}")
    verdict = "passed" if gated.passed else "REJECTED"
    create_markdown_artifact(
        key=f"{key}-gate",
        markdown=f"# Gate {verdict}: {params.name} {published.version}\n\n{published.uri}\n\n{promoted.reason}\n",
        description="gate verdict",
    )
    create_link_artifact(key=f"{key}-pareto", link=f"{published.uri.rstrip('/')}/pareto.png",
                         link_text="Pareto plot (explored candidates vs the chosen point)")


@task(name="compress-one")
def _compress_one(params: PipelineParams) -> dict:
    return compress_model(params)


def load_fleet(path: str | Path) -> list[PipelineParams]:
    """A fleet file: ``defaults:`` (shared knobs) and ``models:`` (a list of per-model overrides)."""
    import yaml

    from lrf_core.errors import PlanError
    from tasks.params import params_from_mapping

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise PlanError(f"Fleet file `{path}` needs a non-empty `models:` list (and optional `defaults:`).")
    unknown = set(data) - {"defaults", "models"}
    if unknown:
        raise PlanError(f"Fleet file `{path}`: unknown top-level keys {sorted(unknown)}; use defaults and models.")
    defaults = data.get("defaults") or {}
    return [params_from_mapping(_merge(defaults, m), source=f"{path} models[{i}]") for i, m in enumerate(data["models"])]


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for k, v in (override or {}).items():
        merged[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return merged


@flow(name="compress-fleet", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def compress_fleet(fleet: list[PipelineParams]) -> list[dict]:
    """Compress many models, one ``compress-model`` run each (see :func:`fleet_flow` for Dask)."""
    return [f.result() for f in _compress_one.map(fleet)]


def fleet_flow(dask_address: Optional[str] = None):
    """``compress_fleet`` on a Dask cluster when ``dask_address`` is given (else one model at a time)."""
    if not dask_address:
        return compress_fleet
    from prefect_dask import DaskTaskRunner

    return compress_fleet.with_options(task_runner=DaskTaskRunner(address=dask_address))
