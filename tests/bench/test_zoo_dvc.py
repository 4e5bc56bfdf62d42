"""The trained zoo parents are DVC outputs (bench/dvc.yaml, hashes in bench/dvc.lock), not git files."""
import subprocess

import yaml

from bench.common import ROOT
from bench.harness import MODES
from bench.zoo import zoo_path


def _zoo_stage():
    return yaml.safe_load((ROOT / "bench" / "dvc.yaml").read_text())["stages"]["zoo"]


def _expected_outs(name: str) -> set[str]:
    keras = zoo_path(name, "full").relative_to(ROOT)
    return {keras.as_posix(), keras.with_suffix(".json").as_posix()}


def test_every_full_mode_parent_is_an_output_of_a_stage_that_trains_it():
    stage = _zoo_stage()
    assert stage["foreach"] == list(MODES["full"].models)
    do = stage["do"]
    assert do["cmd"] == "python -m bench.zoo --models ${item}"
    for name in stage["foreach"]:
        outs = {out.replace("${item}", name) for out in do["outs"]}
        assert outs == _expected_outs(name)
    deps = set(do["deps"])
    assert {"bench/zoo.py", "bench/compress_fashion.py", "lrf_core/zoo.py"} <= deps  # the model definitions


def test_the_lock_records_a_hash_for_every_trained_parent():
    stages = yaml.safe_load((ROOT / "bench" / "dvc.lock").read_text())["stages"]
    for name in MODES["full"].models:
        outs = {o["path"]: o for o in stages[f"zoo@{name}"]["outs"]}
        assert set(outs) == _expected_outs(name)
        assert all(len(o["md5"]) == 32 and o["size"] > 0 for o in outs.values())


def test_git_ignores_the_trained_weights():
    for name in MODES["full"].models:
        path = zoo_path(name, "full").relative_to(ROOT).as_posix()
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert done.returncode == 0, f"{path} is not git-ignored"
