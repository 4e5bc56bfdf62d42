"""`lrf inspect` and `lrf rebuild` end to end, and their bad-input behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flows.cli import main

pytestmark = pytest.mark.slow


def _lrf(capsys, *argv):
    status = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return status, out, err


def test_inspect_json_lists_every_layer_with_totals(digits_model_path, capsys):
    import keras

    status, out, _ = _lrf(capsys, "inspect", digits_model_path, "--json")
    assert status == 0
    report = json.loads(out)
    model = keras.saving.load_model(digits_model_path)
    assert [row["name"] for row in report["layers"]] == [l.name for l in model.layers]
    assert report["total"]["params"] == model.count_params()
    conv2 = next(r for r in report["layers"] if r["name"] == "conv2")
    assert conv2["kernel_shape"] == [3, 3, 16, 16]
    assert conv2["macs"] == 3 * 3 * 16 * 16 * 8 * 8
    assert "svd" in conv2["methods"] and conv2["skip_reason"] is None
    bn = next(r for r in report["layers"] if r["name"] == "bn2")
    assert bn["methods"] == [] and bn["skip_reason"] == "not a factorization target"


def test_inspect_table_is_readable(digits_model_path, capsys):
    status, out, _ = _lrf(capsys, "inspect", digits_model_path)
    assert status == 0
    assert "conv2" in out and "total" in out and "MACs" in out


def test_rebuild_writes_model_and_report_that_agree(digits_model_path, tmp_path, capsys):
    import keras

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"conv2": {"method": "svd", "rank": 4}, "fc1": {"method": "svd", "rank": 8}}))
    out, report_path = tmp_path / "small.keras", tmp_path / "report.json"
    status, stdout, _ = _lrf(capsys, "rebuild", digits_model_path, "--plan", plan, "--data", "sklearn:digits",
                             "--out", out, "--report", report_path, "--calibration-size", 128)
    assert status == 0, stdout
    report = json.loads(report_path.read_text())
    child = keras.saving.load_model(out, safe_mode=True)
    assert report["total"]["params_after"] == child.count_params()
    assert report["objective"] == "sigma" and report["calibration_examples"] == 128
    layers = {l["layer"]: l for l in report["layers"]}
    assert layers["conv2"]["rank"] == [4] and layers["conv2"]["params_after"] == 4 * (144 + 16) + 16
    assert 0 < layers["fc1"]["sigma_error"] < 1 and 0 < layers["fc1"]["frobenius_error"] < 1
    assert "params kept" in stdout


def _bad(capsys, tmp_path, *argv):
    status, out, err = _lrf(capsys, *argv)
    lines = [l for l in err.strip().splitlines() if l]
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("lrf: error: "), err
    assert not (tmp_path / "out.keras").exists()
    assert not list(tmp_path.glob(".out.keras*")), "temporary file left behind"
    return lines[0]


@pytest.mark.parametrize(
    "plan,expected",
    [
        ({"conv9": {"method": "svd", "rank": 2}}, "Plan names layer `conv9`"),
        ({"conv2": {"method": "svd", "rank": 999}}, "Invalid rank for layer `conv2` (method `svd`): expected 1 <= r <= 16"),
        ({"conv2": {"method": "nope", "rank": 2}}, "Unknown method `nope` for a conv2d layer"),
        ({"bn2": {"method": "svd", "rank": 2}}, "Layer `bn2` (BatchNormalization) cannot be factorized"),
        ({"conv2": {"method": "svd"}}, "missing keys ['rank']"),
        ({"conv2": {"method": "svd", "rank": "half"}}, "`rank` must be an int, a list of ints or \"full\""),
    ],
)
def test_bad_plans_give_one_clear_line_and_no_output(digits_model_path, tmp_path, capsys, plan, expected):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    line = _bad(capsys, tmp_path, "rebuild", digits_model_path, "--plan", path, "--out", tmp_path / "out.keras")
    assert expected in line


def test_data_that_does_not_fit_the_model(digits_model_path, tmp_path, capsys):
    data = tmp_path / "wrong.npz"
    np.savez(data, x=np.zeros((20, 28, 28, 1), np.float32), y=np.arange(20) % 10)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"conv2": {"method": "svd", "rank": 2}}))
    line = _bad(capsys, tmp_path, "rebuild", digits_model_path, "--plan", plan, "--data", f"npz:{data}",
                "--out", tmp_path / "out.keras")
    assert "(28, 28, 1)" in line and "(8, 8, 1)" in line


def test_missing_and_corrupt_model_files(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"conv2": {"method": "svd", "rank": 2}}))
    missing = _bad(capsys, tmp_path, "rebuild", tmp_path / "nope.keras", "--plan", plan, "--out", tmp_path / "out.keras")
    assert "nope.keras" in missing
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a model")
    line = _bad(capsys, tmp_path, "rebuild", corrupt, "--plan", plan, "--out", tmp_path / "out.keras")
    assert "corrupt.keras" in line


def test_existing_output_survives_a_failed_rebuild(digits_model_path, tmp_path, capsys):
    out = tmp_path / "out.keras"
    out.write_bytes(b"previous model")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"conv2": {"method": "svd", "rank": 0}}))
    status, _, err = _lrf(capsys, "rebuild", digits_model_path, "--plan", plan, "--out", out)
    assert status == 2 and "Invalid rank" in err
    assert out.read_bytes() == b"previous model"


def test_help_explains_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "inspect" in text and "rebuild" in text and "sklearn:digits" in text


def test_compress_writes_model_report_and_plot_that_agree(digits_model_path, tmp_path, capsys):
    import keras

    out = tmp_path / "run"
    status, stdout, err = _lrf(capsys, "compress", digits_model_path, "--data", "sklearn:digits", "--out", out,
                               "--target-params", 0.3, "--methods", "conv=svd", "dense=svd", "--grid-points", 6,
                               "--calibration-size", 256, "--finetune-epochs", 1)
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    child = keras.saving.load_model(out / "model.keras", safe_mode=True)
    assert report["child"]["params"] == child.count_params() <= 0.3 * report["parent"]["params"]
    assert all(r["method"] == "svd" for r in report["layers"] if r["status"] == "factorized")
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| params_kept | ≤ 30.00 % |" in (out / "report.md").read_text()
    assert "params 74" in stdout or "params" in stdout


def test_compress_impossible_target_exits_3_and_writes_nothing(digits_model_path, tmp_path, capsys):
    out = tmp_path / "run"
    status, _, err = _lrf(capsys, "compress", digits_model_path, "--data", "sklearn:digits", "--out", out,
                          "--target-params", 0.001, "--methods", "conv=svd", "dense=svd", "--grid-points", 4,
                          "--calibration-size", 128)
    assert status == 3
    assert "Cannot meet the target" in err and "reaches params kept" in err
    assert not out.exists()


def test_compress_rejects_unknown_method_names(digits_model_path, tmp_path, capsys):
    status, _, err = _lrf(capsys, "compress", digits_model_path, "--data", "sklearn:digits", "--out", tmp_path / "x",
                          "--methods", "conv=svd,tucker3")
    assert status == 2 and "Unknown method `tucker3` for a conv2d layer" in err and "Allowed: svd, tucker2, cp, spatial" in err


@pytest.mark.parametrize("extra, expected", [
    (["--max-drop", 1.0, "--recovery-budgets", "maybe"], "--recovery-budgets takes 'auto', 'none' or budgets in points"),
    (["--max-drop", 1.0, "--recovery-budgets", "auto", 4], "not 'auto 4'"),
    (["--max-drop", 1.0, "--recovery-budgets", 0.5], "larger than max_drop (1.0)"),
    (["--target-params", 0.3, "--recovery-budgets", 4], "neither cost targets"),
    (["--max-drop", 1.0, "--no-block-latency-rule"], "only changes the latency guard or a latency target"),
])
def test_compress_refuses_options_that_cannot_take_effect(digits_model_path, tmp_path, capsys, extra, expected):
    """`auto` (the default) resolves quietly; a word or list that cannot be tried is one clear line, nothing written."""
    out = tmp_path / "run"
    status, _, err = _lrf(capsys, "compress", digits_model_path, "--data", "sklearn:digits", "--out", out, *extra)
    assert status == 2 and expected in err
    assert not out.exists()


@pytest.mark.parametrize("option, value, message", [
    ("--latency-batch", "0", "a batch size is a whole number from 1 to 4096, not '0'"),
    ("--latency-threads", "0", "a thread count is a whole number from 1 to 1024, not '0'"),
    ("--latency-threads", "two", "a thread count is a whole number from 1 to 1024, not 'two'"),
])
def test_compress_refuses_a_latency_batch_or_thread_count_out_of_range(digits_model_path, tmp_path, capsys, option,
                                                                       value, message):
    with pytest.raises(SystemExit) as info:
        main(["compress", str(digits_model_path), "--data", "sklearn:digits", "--out", str(tmp_path / "x"),
              option, value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("user_value, expected", [(None, 120), ("33", 33)])
def test_the_cli_gives_prefects_ephemeral_api_time_to_start_on_a_busy_host(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    if user_value is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = user_value
    done = subprocess.run([sys.executable, "-c", "import flows.cli\nfrom prefect.settings import get_current_settings\n"
                           "print(get_current_settings().server.ephemeral.startup_timeout_seconds)"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) == expected  # Prefect's own default is 20 s
