"""Smoke test of the benchmark harness (issue 5): a tiny CNN on sklearn digits, every code path once.

Checks the shape of what the benchmark writes (every field of every row, machine info) and that
the report renders with its plots. Nothing about speed or compression quality is asserted here:
the benchmark reports numbers, it does not assert them.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from bench.harness import MODES, run_zoo
    from bench.dask_search import run_dask_search
    from bench.scale import depth_sweep

    out = tmp_path_factory.mktemp("results")
    zoo = tmp_path_factory.mktemp("zoo")
    mode = MODES["smoke"]
    run_zoo(mode, out_dir=out, zoo_dir=zoo)
    depth_sweep(mode, out)
    run_dask_search(mode, out, zoo_dir=zoo)
    return out, zoo


def test_compare_json_has_every_field(smoke_run):
    from bench.harness import LATENCY_FIELDS, ROW_FIELDS

    out, _ = smoke_run
    data = json.loads((out / "compare_tiny_cnn.json").read_text())
    for key in ("experiment", "model", "mode", "machine", "settings", "gate_points", "data", "parent",
                "parent_extra_epochs", "finetune_epoch_s", "rows", "timing", "seconds"):
        assert key in data, key
    for key in ("python", "cpu_count", "threads", "packages"):
        assert key in data["machine"], key
    assert data["machine"]["packages"]["tensorflow"]
    variants = {row["variant"] for row in data["rows"]}
    assert {"lrflow", "sigma@macs50", "frobenius@macs50", "lrflow_guarded", "dprp"} <= variants
    guard = data["extras"]["lrflow_guarded"]["latency_guard"]  # the guard ran, with this machine's timings
    assert guard["ratio"] > 0 and isinstance(guard["reverted"], list)
    for row in data["rows"]:
        assert set(row) == set(ROW_FIELDS), row["variant"]
        assert row["status"] in ("ok", "target_not_met"), (row["variant"], row["error"])  # no variant errs
        if row["status"] == "ok":
            assert row["params"] > 0 and 0 < row["macs_kept"] <= 1.0
            assert row["test_accuracy"] is not None and row["gate_passed"] in (True, False)
            assert row["search_wall_s"] is not None and row["peak_rss_mb"] > 0 and row["other_cpu_cores"] >= 0
            assert set(row["latency"]) == set(LATENCY_FIELDS), row["variant"]
            assert row["latency"]["tf_b1_s"] > 0 and row["latency"]["tf_b64_s"] > 0
    timing = data["timing"]
    assert {"parent", "control", "lrflow"} <= set(timing["tf"]["1"])
    assert "lrflow" in timing["tflite"]["1"]
    assert data["parent_extra_epochs"]["test_accuracy"] is not None


def test_zoo_and_depth_results(smoke_run):
    out, zoo = smoke_run
    record = json.loads((out / "zoo.json").read_text())["models"]["tiny_cnn"]
    for key in ("epochs", "stopped_early", "val_accuracy", "test_accuracy", "params", "macs", "seconds_per_epoch"):
        assert key in record, key
    # one rate and one validation accuracy per epoch trained: the evidence the parent converged
    assert len(record["learning_rates"]) == len(record["val_accuracy_history"]) == record["epochs"]
    assert record["val_accuracy"] == pytest.approx(record["val_accuracy_history"][record["kept_epoch"] - 1], abs=1e-6)
    assert (zoo / "tiny_cnn-smoke.keras").exists()
    depth = json.loads((out / "depth_sweep.json").read_text())
    assert depth["rows"] and depth["rows"][0]["eligible_layers"] > 0 and "candidates" in depth["rows"][0]["phases_s"]


def test_dask_search_result(smoke_run):
    out, _ = smoke_run
    data = json.loads((out / "dask_search.json").read_text())
    assert set(data["runs"]) == {"in_process", "dask_1", "dask_2"}
    for run in data["runs"].values():
        assert run["search_wall_s"] > 0 and {"candidates", "allocation", "refit"} <= set(run["phases_s"])
        assert run["decision"]
    assert data["same_decisions"] is True  # where the layers were fitted does not change the decision
    assert data["speedup_2_vs_1"] > 0 and data["candidates_speedup_2_vs_1"] > 0


def test_report_renders_markdown_and_plots(smoke_run, tmp_path):
    from bench.report.load import load_results
    from bench.report.render import render

    out, _ = smoke_run
    report = tmp_path / "REPORT.md"
    text = render(load_results(out), report, results_dir=out)
    assert report.read_text() == text
    assert "## Goals" in text and "tiny_cnn" in text and "met" in text
    pngs = list(tmp_path.rglob("*.png"))
    assert any(p.name == "pareto_tiny_cnn.png" for p in pngs)
    assert all(p.stat().st_size > 1000 for p in pngs)
    for png in pngs:  # every plot the report links to exists
        assert png.relative_to(tmp_path).as_posix() in text


def test_a_resumed_run_keeps_finished_variants_and_runs_only_the_rest(smoke_run, tmp_path):
    """A full run is done in pieces: a run killed before ``dprp`` is continued, not redone."""
    import shutil

    from bench.harness import MODES, run_zoo

    out, zoo = smoke_run
    shutil.copytree(out, tmp_path / "out")
    shutil.copytree(zoo, tmp_path / "zoo")
    compare = tmp_path / "out" / "compare_tiny_cnn.json"
    before = json.loads(compare.read_text())
    killed = {**before, "rows": [r for r in before["rows"] if r["variant"] != "dprp"], "partial": True}
    compare.write_text(json.dumps(killed))

    run_zoo(MODES["smoke"], out_dir=tmp_path / "out", zoo_dir=tmp_path / "zoo", resume=True)

    after = json.loads(compare.read_text())
    assert after["partial"] is False
    assert [r["variant"] for r in after["rows"]] == [r["variant"] for r in before["rows"]]  # ALL_VARIANTS order
    assert before["runs"][0]["variants"] == ["lrflow", "objective", "lrflow_guarded", "energy95_svd", "dprp"]
    assert after["runs"] == [*before["runs"], {"commit": after["runs"][-1]["commit"], "variants": ["dprp"]}]
    assert after["parent_extra_epochs"] == before["parent_extra_epochs"]  # the control is not trained again
    old = {r["variant"]: r for r in before["rows"]}
    for row in after["rows"]:
        if row["variant"] != "dprp":  # kept as they were, apart from the latency re-measured for every child
            assert {k: v for k, v in row.items() if k != "latency"} == {k: v for k, v in old[row["variant"]].items()
                                                                     if k != "latency"}
        if row["status"] == "ok":  # every child is timed again, in one interleaved run
            assert row["latency"]["tf_b1_s"] > 0, row["variant"]
    assert after["rows"][-1]["variant"] == "dprp" and after["rows"][-1]["status"] == "ok"

    from bench.report.load import load_results
    from bench.report.render import render

    text = render(load_results(tmp_path / "out"), tmp_path / "REPORT.md", results_dir=tmp_path / "out")
    assert "tiny_cnn: done in 2 pieces (`--resume`)" in text and "dprp at " in text


def test_a_killed_piece_records_only_the_variants_it_finished(smoke_run, tmp_path, monkeypatch):
    import shutil

    import pytest

    from bench import harness

    out, zoo = smoke_run
    shutil.copytree(out, tmp_path / "out")
    shutil.copytree(zoo, tmp_path / "zoo")
    before = json.loads((tmp_path / "out" / "compare_tiny_cnn.json").read_text())

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill during dprp leaves behind: the snapshot of the variants before it

    monkeypatch.setattr(harness, "run_dprp", killed)
    with pytest.raises(KeyboardInterrupt):
        harness.run_zoo(harness.MODES["smoke"], out_dir=tmp_path / "out", zoo_dir=tmp_path / "zoo", resume=True,
                        redo=("energy95_svd", "dprp"))
    after = json.loads((tmp_path / "out" / "compare_tiny_cnn.json").read_text())
    assert after["partial"] is True
    assert after["runs"][:-1] == before["runs"] and after["runs"][-1]["variants"] == ["energy95_svd"]
    assert "dprp" not in {r["variant"] for r in after["rows"]}  # redone, not finished: its old row is gone too


def test_a_run_with_other_settings_is_not_resumed(smoke_run, tmp_path):
    from bench.harness import MODES, _resumable, _settings

    out, zoo = smoke_run
    data = json.loads((out / "compare_tiny_cnn.json").read_text())
    record = json.loads((out / "zoo.json").read_text())["models"]["tiny_cnn"]
    workdir = zoo / "children" / "smoke" / "tiny_cnn"
    settings = _settings(MODES["smoke"])
    assert _resumable(out / "compare_tiny_cnn.json", settings, record, workdir)["rows"] == data["rows"]
    assert _resumable(out / "compare_tiny_cnn.json", {**settings, "grid_points": 99}, record, workdir) is None
    grown = {**settings, "variants": [*settings["variants"], "lrflow_guarded"]}  # a variant added later just runs
    assert _resumable(out / "compare_tiny_cnn.json", grown, record, workdir)["rows"] == data["rows"]
    assert _resumable(out / "compare_tiny_cnn.json", settings, {**record, "request": {"seed": 1}}, workdir) is None
    retrained = {**record, "test_accuracy": record["test_accuracy"] - 0.01}  # same request, another training
    assert _resumable(out / "compare_tiny_cnn.json", settings, retrained, workdir) is None
    assert _resumable(tmp_path / "absent.json", settings, record, workdir) is None


def test_other_processes_cpu_use_is_measured():
    """A busy-looping child process during the block shows up as about one other core."""
    import subprocess
    import sys
    import time

    from bench.common import OtherLoad

    with OtherLoad() as quiet:
        time.sleep(0.5)
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.5)  # interpreter start-up
        with OtherLoad() as busy:
            time.sleep(1.5)
    finally:
        spinner.wait()
    assert quiet.cores is not None and quiet.cores >= 0
    assert busy.cores >= 0.6  # one spinning core (a shared machine only adds to it)
