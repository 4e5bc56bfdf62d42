"""The flow killed after the search step: a re-run resumes from the persisted results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks import registry, s3io

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_killed_after_search_resumes_without_searching_again(s3_server, digits_model_path, tmp_path):
    bucket = "lrf-resume-tests"
    s3io.ensure_bucket(s3io.s3_client(s3_server.endpoint_url), bucket)
    workspace = tmp_path / "ws"
    config = {"name": "resumed", "model": str(digits_model_path), "workspace": str(workspace),
              "search": {"target_params": 0.5, "methods_conv": ["svd"], "methods_dense": ["svd"], "grid_points": 4,
                         "latency_guard": False},
              "finetune": {"epochs": 3}, "gate": {"measure_latency": False},
              "registry": {"bucket": bucket}}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    home = tmp_path / "prefect-home"  # both runs share Prefect's result store, as one machine would
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage")}
    lrf = str(Path(sys.executable).parent / "lrf")

    first = subprocess.Popen([lrf, "flow", "run", str(path), "--json"], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(workspace.glob("rebuild/*/record.json")):  # search finished and its result persisted
        assert first.poll() is None, "the flow ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    decision = next(workspace.glob("search/*/decision.npz"))
    searched_at = decision.stat().st_mtime_ns
    assert registry.list_versions(s3io.s3_client(), bucket, "lrflow", "resumed") == []  # killed before publish

    again = subprocess.run([lrf, "flow", "run", str(path), "--json"], env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout[again.stdout.index("[\n"):])[0]
    assert result["passed"] and result["promoted"]
    assert decision.stat().st_mtime_ns == searched_at  # the search was not run again
    assert len(list(workspace.glob("search/*"))) == 1
    manifest = registry.read_manifest(s3io.s3_client(), bucket, "lrflow", "resumed", result["version"])
    assert manifest.status == "passed" and "model.keras" in manifest.files
