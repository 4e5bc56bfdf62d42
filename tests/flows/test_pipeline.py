"""The compress-model flow end to end: real Prefect runs, the real moto S3 server, GE suites."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tasks import registry, s3io
from tasks.params import params_from_mapping

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

PREFIX = "lrflow"


@pytest.fixture(scope="module")
def bucket(s3_server):
    name = "lrf-pipeline-tests"
    s3io.ensure_bucket(s3io.s3_client(s3_server.endpoint_url), name)
    return name


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("workspace")


def _params(model_path, bucket, workspace, name="digits", **sections):
    base = {
        "name": name, "model": str(model_path), "workspace": str(workspace),
        "search": {"target_params": 0.35, "methods_conv": ["svd"], "methods_dense": ["svd"], "grid_points": 6,
                   "latency_guard": False},  # measured timings would make the choice vary run to run
        "finetune": {"epochs": 2},
        "gate": {"measure_latency": False},  # timing noise of a tiny model is not what these tests check
        "registry": {"bucket": bucket, "prefix": PREFIX},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return params_from_mapping(base)


def _task_states(flow_state) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(flow_state)])),
                                     sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def flow_run_id(state):
    return state.state_details.flow_run_id


@pytest.fixture(scope="module")
def passed_run(digits_model_path, bucket, workspace):
    from flows.pipeline import compress_model

    params = _params(digits_model_path, bucket, workspace)
    state = compress_model(params, return_state=True)
    return params, state, state.result()


def test_full_flow_publishes_a_verified_version_and_moves_the_alias(passed_run, bucket):
    params, _, result = passed_run
    assert result["passed"] and result["status"] == "passed" and result["promoted"]
    client = s3io.s3_client()
    manifest = registry.read_manifest(client, bucket, PREFIX, "digits", result["version"])
    assert {"model.keras", "model.tflite", "report.json", "report.md", "pareto.png", "validation/gate.json",
            "validation/calibration.json", "validation/data-docs/index.html"} <= set(manifest.files)
    root = registry.version_key(PREFIX, "digits", result["version"])
    for key, entry in manifest.files.items():  # every checksum matches the stored bytes
        body = client.get_object(Bucket=bucket, Key=s3io.join_key(root, key))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry.sha256 and len(body) == entry.size
    assert registry.resolve(client, bucket, PREFIX, "digits", "production") == result["version"]
    assert manifest.lineage["parent_model"]["sha256"] and manifest.lineage["calibration_set_sha256"]
    summary = result["summary"]
    assert summary["params_kept"] <= 0.35 and summary["drop_points"] <= 1.0
    artifacts = _artifacts(passed_run[1])
    assert "| conv" in artifacts["digits-report"] and "Accuracy gate: PASSED" in artifacts["digits-report"]
    assert result["version"] in artifacts["digits-gate"] and artifacts["digits-pareto"].endswith("pareto.png)")


def _artifacts(flow_state) -> dict[str, str]:
    from prefect.client.orchestration import get_client

    # Prefect 3.8.8's clients send null for omitted filters, which its own API refuses: post the body directly
    body = {"artifacts": {"flow_run_id": {"any_": [str(flow_run_id(flow_state))]}}, "limit": 50, "offset": 0,
            "sort": "CREATED_DESC"}
    with get_client(sync_client=True) as client:
        response = client._client.post("/artifacts/filter", json=body)
    response.raise_for_status()
    return {a["key"]: a["data"] for a in response.json() if a["key"]}


def test_rerun_skips_finished_steps_and_publishes_the_same_version(passed_run):
    from flows.pipeline import compress_model

    params, _, first = passed_run
    state = compress_model(params, return_state=True)
    again = state.result()
    assert again["version"] == first["version"]
    states = _task_states(state)
    for step in ("check-data", "calibrate", "search", "rebuild", "finetune", "gate"):
        assert states[step] == "Cached", (step, states)
    assert states["publish"] == "Completed" and not again["promoted"]  # already there: nothing to move


def test_a_model_that_loses_accuracy_is_published_rejected_and_the_alias_stays(passed_run, digits_model_path, bucket,
                                                                               workspace):
    from flows.pipeline import compress_model

    _, _, passed = passed_run
    params = _params(digits_model_path, bucket, workspace, search={"target_params": 0.1}, finetune={"epochs": 0},
                     gate={"max_drop": 0.0, "tolerance": 0.0})
    result = compress_model(params)
    assert not result["passed"] and result["status"] == "rejected" and not result["promoted"]
    assert result["version"] != passed["version"]
    client = s3io.s3_client()
    assert registry.resolve(client, bucket, PREFIX, "digits", "production") == passed["version"]
    statuses = {v.version: v.status for v in registry.list_versions(client, bucket, PREFIX, "digits")}
    assert statuses[result["version"]] == "rejected"
    with pytest.raises(registry.VersionRejectedError):
        registry.promote(client, bucket, PREFIX, "digits", "production", result["version"])


def test_latency_is_timed_at_the_serving_batch_and_thread_count_end_to_end(digits_model_path, bucket, workspace):
    """gate.latency_batch / gate.latency_threads reach the guard and the gate: the guard times the whole child in
    paired rounds, the gate decides on the paired median, and report, gate check and summary agree on it."""
    import json
    from pathlib import Path

    from flows.pipeline import compress_model

    params = _params(digits_model_path, bucket, workspace, name="digits-latency",
                     search={"latency_guard": True},
                     gate={"measure_latency": True, "latency_batch": 4, "latency_threads": 1})
    result = compress_model(params)
    report = json.loads((Path(result["report_dir"]) / "report.json").read_text())
    child = report["child"]
    assert child["latency_timing"] == {"batch": 4, "threads": 1}
    ratio = child["latency_ratio"]
    assert ratio["low"] <= ratio["median"] <= ratio["high"] and ratio["rounds"] >= 200 and ratio["rounds"] % 200 == 0
    assert child["latency_s"] == pytest.approx(report["parent"]["latency_s"] * ratio["median"])
    summary = result["summary"]
    assert summary["latency_ratio"] == ratio["median"] and summary["latency_interval"] == [ratio["low"], ratio["high"]]
    assert summary["latency_batch"] == 4
    check = next(c for c in summary["checks"] if c["name"] == "latency_ratio")
    assert check["value"] == ratio["median"] and check["threshold"] == pytest.approx(1.05)
    assert result["passed"] == all(c["passed"] is not False for c in summary["checks"])
    guard = report["latency_guard"]  # the whole child was timed against the parent in paired rounds
    assert guard["steps"] and all(step["rounds"] >= 200 for step in guard["steps"])
    assert "| latency (batch 4, 1 thread, ms) |" in (Path(result["report_dir"]) / "report.md").read_text()


def test_recovery_budgets_fine_tune_the_larger_budget_first_and_fall_back(digits_model_path, bucket, workspace):
    """A 1 000-point budget before the fine-tune compresses past what 2 epochs recover: that child is fine-tuned
    first, found over the budget on validation, and the child at search.max_drop is kept, gated and published."""
    import io
    import json
    from pathlib import Path

    from rich.console import Console

    from flows.flow_cli import print_result
    from flows.pipeline import compress_model

    params = _params(digits_model_path, bucket, workspace, name="digits-recovery",
                     search={"target_params": None, "max_drop": 1.0, "recovery_budgets": [1000.0]})
    result = compress_model(params)
    report = json.loads((Path(result["report_dir"]) / "report.json").read_text())
    tried = report["recovery"]
    assert [a["max_drop_before_finetune"] for a in tried] == [1000.0, 1.0]
    assert [a["kept"] for a in tried] == [False, True]
    assert tried[0]["val_drop_after_finetune"] > 1.0 and tried[0]["params_kept"] < tried[1]["params_kept"]
    assert report["config"]["max_drop"] == 1.0  # the gated report is the kept choice's
    assert abs(result["summary"]["params_kept"] - tried[1]["params_kept"]) < 1e-9
    assert "## Recovery budgets" in (Path(result["report_dir"]) / "report.md").read_text()
    assert result["summary"]["recovery"] == tried
    assert report["lineage"]["recovery_budgets"] == [1000.0]  # what the search was given, "auto" resolved
    assert result["summary"]["latency_batch"] == 1 and result["summary"]["hints"] == []  # the guard is off here
    console = Console(file=io.StringIO(), width=100)  # not capsys: Prefect's log handlers outlive the test
    print_result(result, console)
    lines = [line for line in console.file.getvalue().splitlines() if line.strip().startswith("budget ")]
    assert len(lines) == 2 and "budget 1000 points" in lines[0] and lines[0].endswith("refused")
    assert "budget 1 points" in lines[1] and lines[1].endswith("kept")


def _bad_npz(tmp_path, digits_split, *, nan=False, drop_class=None):
    train, _, test = digits_split
    x, y = train.x.copy(), train.y.copy()
    if nan:
        x[:3, 0, 0, 0] = np.nan
    if drop_class is not None:
        keep = y != drop_class
        x, y = x[keep], y[keep]
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=x, y_train=y, x_test=test.x, y_test=test.y, num_classes=10)
    return f"npz:{path}"


@pytest.mark.parametrize("problem, expected", [("nan", "NaN or inf"), ("class", "class 3")])
def test_bad_calibration_data_stops_before_search_and_publishes_nothing(problem, expected, digits_model_path, bucket,
                                                                        tmp_path, digits_split):
    from flows.pipeline import compress_model
    from tasks.expectations import CalibrationCheckError

    uri = _bad_npz(tmp_path, digits_split, nan=problem == "nan", drop_class=3 if problem == "class" else None)
    name = f"bad-{problem}"
    params = _params(digits_model_path, bucket, tmp_path / "ws", name=name, data=uri)
    state = compress_model(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(CalibrationCheckError, match=expected):
        state.result()
    states = _task_states(state)
    assert states["check-data"] == "Failed" and "search" not in states
    assert registry.list_versions(s3io.s3_client(), bucket, PREFIX, name) == []


def _lrf(*args: str):
    """The installed `lrf` command in a child process (its own Prefect API, the session's S3)."""
    import subprocess
    import sys
    from pathlib import Path

    lrf = Path(sys.executable).parent / "lrf"
    return subprocess.run([str(lrf), *args], capture_output=True, text=True, timeout=900)


def test_fleet_file_runs_every_model_through_the_cli(digits_model_path, bucket, tmp_path):
    import json

    import yaml

    fleet = {
        "defaults": {"model": str(digits_model_path), "workspace": str(tmp_path / "ws"),
                     "search": {"target_params": 0.5, "methods_conv": ["svd"], "methods_dense": ["svd"],
                                "grid_points": 4, "latency_guard": False},
                     "finetune": {"epochs": 1}, "gate": {"measure_latency": False},
                     "registry": {"bucket": bucket, "prefix": PREFIX}},
        "models": [{"name": "fleet-a"}, {"name": "fleet-b", "search": {"target_params": 0.4}}],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    done = _lrf("flow", "run", str(path), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout[done.stdout.index("[\n"):])
    assert [r["name"] for r in results] == ["fleet-a", "fleet-b"]
    assert results[0]["summary"]["params_kept"] <= 0.5 and results[1]["summary"]["params_kept"] <= 0.4
    client = s3io.s3_client()
    for r in results:
        assert registry.resolve(client, bucket, PREFIX, r["name"], "production") == r["version"]


def test_unknown_keys_and_bad_fleet_files_are_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: x\nmodel: m.keras\ngate:\n  max_dorp: 1.0\n")
    done = _lrf("flow", "run", str(path))
    assert done.returncode == 2 and "unknown key `gate.max_dorp`" in done.stderr
    path.write_text("models: []\n")
    done = _lrf("flow", "run", str(path))
    assert done.returncode == 2 and "non-empty `models:`" in done.stderr


def test_deployments_validate_and_carry_their_cron_schedule():
    import yaml

    from flows.pipeline import compress_model

    config = yaml.safe_load((__import__("pathlib").Path(__file__).parents[2] / "prefect.yaml").read_text())
    single = next(d for d in config["deployments"] if d["entrypoint"].endswith(":compress_model"))
    params = params_from_mapping(single["parameters"]["params"])
    assert params.model.startswith("registry:") and single["schedules"][0]["cron"] == "0 3 * * 0"
    deployment = compress_model.to_deployment(name="t", cron="0 3 * * 0", parameters={"params": params.model_dump(mode="json")})
    assert deployment.schedules[0].schedule.cron == "0 3 * * 0"


@pytest.mark.parametrize("kind", ["registry-alias", "registry-version", "s3"])
def test_parent_can_come_from_the_registry_or_s3(passed_run, bucket, tmp_path, kind):
    from tasks import steps

    params, _, result = passed_run
    version = result["version"]
    key = s3io.join_key(registry.version_key(PREFIX, "digits", version), "model.keras")
    uri = {"registry-alias": "registry:digits@production", "registry-version": f"registry:digits/{version}",
           "s3": f"s3://{bucket}/{key}"}[kind]
    record = steps.fetch_model(params.model_copy(update={"model": uri}), tmp_path)
    manifest = registry.read_manifest(s3io.s3_client(), bucket, PREFIX, "digits", version)
    assert record.file.sha256 == manifest.files["model.keras"].sha256
    assert record.params == result["summary"]["child_params"]


def test_missing_parent_and_missing_alias_are_clear_errors(passed_run, tmp_path):
    from lrf_core.errors import LRFError
    from tasks import steps

    params = passed_run[0]
    with pytest.raises(LRFError, match="does not exist"):
        steps.fetch_model(params.model_copy(update={"model": str(tmp_path / "nope.keras")}), tmp_path)
    with pytest.raises(registry.AliasNotFoundError):
        steps.fetch_model(params.model_copy(update={"model": "registry:digits@staging"}), tmp_path)


@pytest.fixture(scope="module")
def dask_cluster():
    """A local Dask cluster of 2 worker processes (one thread each), shared by the Dask tests."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


def test_fleet_fans_out_on_a_dask_cluster(digits_model_path, bucket, tmp_path, dask_cluster):
    import yaml

    from flows.pipeline import fleet_flow, load_fleet

    fleet = {
        "defaults": {"model": str(digits_model_path), "workspace": str(tmp_path / "ws"),
                     "search": {"target_params": 0.5, "methods_conv": ["svd"], "methods_dense": ["svd"],
                                "grid_points": 4, "latency_guard": False},
                     "finetune": {"epochs": 1}, "gate": {"measure_latency": False},
                     "registry": {"bucket": bucket, "prefix": PREFIX}},
        "models": [{"name": "dask-a"}, {"name": "dask-b"}],
    }
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    results = fleet_flow(dask_cluster.scheduler_address)(load_fleet(tmp_path / "fleet.yaml"))
    assert [r["name"] for r in results] == ["dask-a", "dask-b"] and all(r["passed"] for r in results)
    # same parameters apart from the name: the two workers made the same decisions ...
    assert results[0]["summary"]["child_params"] == results[1]["summary"]["child_params"]
    # ... and so does the local runner, to the byte
    from flows.pipeline import compress_model

    local_params = load_fleet(tmp_path / "fleet.yaml")[0].model_copy(update={"workspace": str(tmp_path / "local")})
    local = compress_model(local_params)
    # methods and ranks to the byte; factor weights to round-off (BLAS threads differ in a worker)
    decisions = lambda ws: {p.read_bytes() for p in ws.glob("search/*/decision.json")}  # noqa: E731
    assert len(decisions(tmp_path / "local")) == 1 and decisions(tmp_path / "ws") == decisions(tmp_path / "local")
    weights = [np.load(p) for p in sorted((tmp_path / "ws").glob("search/*/decision.npz"))]
    local_weights = np.load(next((tmp_path / "local").glob("search/*/decision.npz")))
    for key in local_weights.files:
        for w in weights:
            np.testing.assert_allclose(w[key], local_weights[key], rtol=1e-4, atol=1e-6)
    assert local["summary"]["child_params"] == results[0]["summary"]["child_params"]


def _decision(workspace):
    (meta,) = workspace.glob("search/*/decision.json")
    return meta.read_bytes(), np.load(meta.with_suffix(".npz"))


def test_one_model_fits_its_layers_on_a_dask_cluster(digits_model_path, bucket, tmp_path, dask_cluster):
    """The search's layer jobs run on 2 worker processes; the decision is the local runner's."""
    from distributed import Client

    from flows.pipeline import compress_model

    # the MACs sit in the convolutions; Tucker-2 there means refit jobs as well as grid jobs
    mixed = {"target_params": None, "target_macs": 0.5, "methods_conv": ["tucker2"], "grid_points": 4}
    dask_params = _params(digits_model_path, bucket, tmp_path / "dask", name="dask-one", search=mixed)
    local_params = dask_params.model_copy(update={"workspace": str(tmp_path / "local")})
    with Client(dask_cluster.scheduler_address) as client:
        before = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
        on_dask = compress_model(dask_params, dask_address=dask_cluster.scheduler_address)
        after = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
    local = compress_model(local_params)
    assert after > before  # the workers did run the jobs
    (meta, arrays), (local_meta, local_arrays) = _decision(tmp_path / "dask"), _decision(tmp_path / "local")
    assert meta == local_meta and b"tucker2" in meta  # methods and ranks to the byte
    assert arrays.files == local_arrays.files
    for key in local_arrays.files:  # factors to round-off (a worker's BLAS may use other threads)
        np.testing.assert_allclose(arrays[key], local_arrays[key], rtol=1e-4, atol=1e-6)
    assert on_dask["summary"]["child_params"] == local["summary"]["child_params"]


def test_an_unreachable_dask_scheduler_is_named(monkeypatch):
    from tasks import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(distributed.DaskUnavailableError, match=r"tcp://127\.0\.0\.1:9'.*leave --dask"):
        with distributed.layer_map_on("tcp://127.0.0.1:9"):
            pass


def test_no_credential_reaches_a_published_object(passed_run, bucket):
    import os

    secrets = [os.environ[k].encode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    client = s3io.s3_client()
    keys = s3io.list_keys(client, bucket, f"{PREFIX}/models/digits/")
    assert len(keys) > 10
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert not any(secret in body for secret in secrets), key


def test_credentials_pasted_into_an_endpoint_url_are_redacted_from_the_lineage():
    from tasks.steps import _redacted

    dumped = {"registry": {"endpoint_url": "https://AKIAEXAMPLE:s3cr3t@minio.internal:9000", "bucket": "b"}}
    assert _redacted(dumped)["registry"]["endpoint_url"] == "https://***@minio.internal:9000"
    assert _redacted({"registry": {"endpoint_url": None}}) == {"registry": {"endpoint_url": None}}
