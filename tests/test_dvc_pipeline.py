"""The DVC stages (dvc.yaml): repro → push → fresh clone → pull restores identical files; exp run -S works.

Runs the real `dvc` CLI on a copy of the working tree, with its remote and the registry on
the session's moto server.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
# bench/ has its own dvc.yaml (the benchmark zoo, hours of training): this test is about the root pipeline.
# "cache" is .dvc/cache: the copy starts with an empty cache, as a fresh clone does.
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "demo-out", ".lrflow", "*.egg-info", "results", "__pycache__",
                                     ".pytest_cache", ".ruff_cache", "tmp", "models", "pipeline", "dvc.lock", "bench",
                                     "cache")


def _run(args, cwd, env):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("models", "pipeline") for p in sorted((root / d).rglob("*"))
            if p.is_file() and p.name != ".gitignore" and "publish" not in p.parts and "promote" not in p.parts}


@pytest.fixture(scope="module")
def dvc_repo(s3_server, tmp_path_factory):
    from tasks import s3io

    bucket = "lrf-dvc-tests"
    s3io.ensure_bucket(s3io.s3_client(s3_server.endpoint_url), bucket)
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    shutil.copytree(ROOT, repo, ignore=COPY_IGNORE)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["search"].update(methods_conv=["svd"], methods_dense=["svd"], grid_points=6, latency_guard=False)
    params["finetune"]["epochs"] = 1
    params["gate"]["measure_latency"] = False
    params["registry"]["bucket"] = bucket
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "GIT_AUTHOR_NAME": "lrflow-test",
           "GIT_AUTHOR_EMAIL": "test@lrflow.invalid", "GIT_COMMITTER_NAME": "lrflow-test",
           "GIT_COMMITTER_EMAIL": "test@lrflow.invalid"}
    for args in (["git", "init", "-q"], ["dvc", "remote", "modify", "storage", "url", f"s3://{bucket}/dvc"],
                 ["dvc", "remote", "modify", "storage", "endpointurl", s3_server.endpoint_url],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "lrflow copy"]):
        _run(args, repo, env)
    _run(["dvc", "repro"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "repro"], repo, env)
    _run(["dvc", "push"], repo, env)
    return repo, env, bucket


def test_repro_publishes_and_a_fresh_clone_pulls_identical_files(dvc_repo, tmp_path):
    import json

    repo, env, bucket = dvc_repo
    promoted = json.loads((repo / "pipeline" / "promote" / "record.json").read_text())
    assert promoted["promoted"] and promoted["alias"] == "production"
    # params.yaml's recovery_budgets: auto with max_drop alone: the 8/4/2-point choices were DVC outputs too
    search = json.loads((repo / "pipeline" / "search" / "record.json").read_text())
    assert [c["max_drop"] for c in search["recovery"]] == [8.0, 4.0, 2.0]
    assert (repo / "pipeline" / "finetune" / "recovery.json").is_file()
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    _run(["dvc", "pull"], clone, env)
    original, pulled = _hashes(repo), _hashes(clone)
    assert {"models/digits-cnn.keras", "pipeline/calibrate/calibration.npz", "pipeline/gate/model.keras"} <= set(pulled)
    assert pulled == original
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], clone, env)


def test_exp_run_sets_a_search_parameter(dvc_repo):
    import json

    repo, env, _ = dvc_repo
    _run(["dvc", "exp", "run", "-S", "search.target_macs=0.5"], repo, env)
    search = json.loads((repo / "pipeline" / "search" / "record.json").read_text())
    assert search["macs_kept"] <= 0.5
    assert search["recovery"] == []  # auto is none under a cost target, so the target is not refused
    assert yaml.safe_load((repo / "params.yaml").read_text())["search"]["target_macs"] == 0.5
