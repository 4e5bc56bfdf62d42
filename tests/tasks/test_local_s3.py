"""tasks.local_s3 and infra/local/s3.sh: a real moto server started, reused, reported and stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks import local_s3, s3io

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").exists() and b"moto.server" in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_server_env_uses_dummy_credentials_never_the_callers():
    handle = local_s3.ServerHandle("http://127.0.0.1:5555", 1, "127.0.0.1", 5555, Path("."))
    env = local_s3.server_env(handle, {"AWS_SECRET_ACCESS_KEY": "real-secret", "AWS_ACCESS_KEY_ID": "AKIAREAL"})
    assert env == {"AWS_ENDPOINT_URL": "http://127.0.0.1:5555", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    assert local_s3.export_lines({"A": "x y", "B": "1"}) == "export A='x y'\nexport B=1\n"


def test_port_and_state_dir_come_from_the_environment():
    assert local_s3.port_from_env({}) == 5555 and local_s3.port_from_env({"LRF_S3_PORT": "0"}) == 0
    with pytest.raises(local_s3.LocalS3Error, match="LRF_S3_PORT"):
        local_s3.port_from_env({"LRF_S3_PORT": "http"})
    assert local_s3.state_dir_from_env({}) == Path(".lrflow/s3")
    assert local_s3.state_dir_from_env({"LRF_S3_STATE_DIR": "/tmp/x"}) == Path("/tmp/x")


@pytest.mark.integration
def test_start_serves_s3_is_idempotent_and_stop_ends_the_process(tmp_path, monkeypatch):
    handle = local_s3.start_server("127.0.0.1", 0, tmp_path, detach=False)
    try:
        assert handle.endpoint_url == f"http://127.0.0.1:{handle.port}" and handle.port > 0
        assert _alive(handle.pid)
        for key, value in local_s3.server_env(handle).items():
            monkeypatch.setenv(key, value)
        client = s3io.s3_client()
        s3io.ensure_bucket(client, "lrflow")
        s3io.put_bytes(client, "lrflow", "hello.txt", b"hi")
        assert local_s3.start_server("127.0.0.1", 0, tmp_path) == handle  # reused, not a second server
        assert local_s3.find_server(tmp_path) == handle
        assert json.loads((tmp_path / "server.json").read_text())["pid"] == handle.pid
    finally:
        local_s3.stop_server(handle)
    assert not _alive(handle.pid)
    assert local_s3.find_server(tmp_path) is None and not (tmp_path / "server.json").exists()
    local_s3.stop_server(handle)  # stopping again is harmless


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_an_attached_server_dies_with_the_process_that_started_it(tmp_path):
    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tasks import local_s3; "
         "h = local_s3.start_server('127.0.0.1', 0, sys.argv[1], detach=False); print(h.pid, flush=True); "
         "time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        server_pid = int(starter.stdout.readline())
        assert _alive(server_pid)
    finally:
        starter.kill()  # SIGKILL: no cleanup code runs in the starter
        starter.wait()
    deadline = time.monotonic() + 10
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server_pid)


def test_a_stale_record_is_ignored_and_its_pid_never_signalled(tmp_path):
    # The record names this very test process: it is alive but not a moto server.
    record = {"endpoint_url": "http://127.0.0.1:1", "pid": os.getpid(), "host": "127.0.0.1", "port": 1}
    (tmp_path / "server.json").write_text(json.dumps(record))
    assert local_s3.find_server(tmp_path) is None
    # Were this process signalled, the test run would end here.
    local_s3.stop_server(local_s3.ServerHandle(record["endpoint_url"], os.getpid(), "127.0.0.1", 1, tmp_path))
    assert not (tmp_path / "server.json").exists()  # the stale record is cleaned up


@pytest.mark.integration
def test_command_line_start_status_env_stop(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LRF_S3_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LRF_S3_PORT", "0")
    monkeypatch.delenv("LRF_REGISTRY_BUCKET", raising=False)
    try:
        assert local_s3.main(["start"]) == 0
        started = capsys.readouterr()
        exports = dict(line.removeprefix("export ").split("=", 1) for line in started.out.splitlines())
        assert set(exports) == {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                "AWS_DEFAULT_REGION", "LRF_REGISTRY_BUCKET"}
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert exports["LRF_REGISTRY_BUCKET"] == "lrflow"
        assert "started" in started.err
        for key, value in exports.items():
            monkeypatch.setenv(key, value)
        client = s3io.s3_client()
        assert s3io.list_keys(client, "lrflow", "") == []  # the registry bucket was created

        assert local_s3.main(["start"]) == 0
        again = capsys.readouterr()
        assert "already running" in again.err and f"AWS_ENDPOINT_URL={exports['AWS_ENDPOINT_URL']}" in again.out
        assert local_s3.main(["status"]) == 0 and exports["AWS_ENDPOINT_URL"] in capsys.readouterr().out
        assert local_s3.main(["env"]) == 0 and exports["AWS_ENDPOINT_URL"] in capsys.readouterr().out
        pid = local_s3.find_server(tmp_path).pid
        assert local_s3.main(["stop"]) == 0
        assert not _alive(pid)
        assert local_s3.main(["status"]) == local_s3.EXIT_NOT_RUNNING
        assert local_s3.main(["env"]) == 2 and "infra/local/s3.sh start" in capsys.readouterr().err
    finally:
        running = local_s3.find_server(tmp_path)
        if running is not None:
            local_s3.stop_server(running)


def test_shell_wrapper_reports_status_and_usage(tmp_path):
    env = {**os.environ, "LRF_S3_STATE_DIR": str(tmp_path), "PYTHON": sys.executable}
    status = subprocess.run([str(REPO / "infra/local/s3.sh"), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == local_s3.EXIT_NOT_RUNNING and "not running" in status.stdout
    usage = subprocess.run([str(REPO / "infra/local/s3.sh"), "restart"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "start|stop|status|env" in usage.stderr


def test_s3_server_fixture_points_clients_at_loopback(s3_server):
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:") and _alive(s3_server.pid)
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
