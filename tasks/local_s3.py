"""The embedded default S3: a real moto server, run as a background process on loopback.

Command line (``infra/local/s3.sh`` wraps it)::

    python -m tasks.local_s3 start [--port P] [--host 127.0.0.1] [--bucket NAME]
    python -m tasks.local_s3 stop | status | env

``start`` launches ``python -m moto.server`` in its own session, waits until it answers
HTTP, creates the registry bucket, and prints ``export ...`` lines for the shell
(``eval "$(infra/local/s3.sh start)"``). It is idempotent: a server already running for the
state directory is reused. The state directory (``.lrflow/s3/`` under the current
directory, or ``$LRF_S3_STATE_DIR``) holds ``server.json`` (pid, host, port) and
``server.log``. The port is ``$LRF_S3_PORT`` (default 5555); port 0 picks a free one.

moto keeps everything in memory: stopping the server discards the buckets. moto accepts
any credentials, so the printed ones are fixed dummies; credentials found in the
environment are never printed.

Python API (used by the test fixture): :func:`start_server`, :func:`stop_server`,
:func:`find_server`, :func:`server_env`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from lrf_core.errors import LRFError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555
DEFAULT_STATE_DIR = Path(".lrflow") / "s3"
DEFAULT_BUCKET = "lrflow"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
STATE_FILE = "server.json"
LOG_FILE = "server.log"
EXIT_NOT_RUNNING = 3  # as LSB init scripts' `status`


class LocalS3Error(LRFError, RuntimeError):
    """The local S3 server could not be started, found or stopped."""


@dataclass(frozen=True)
class ServerHandle:
    """A running moto server: its URL, process id, and the state directory that records it."""

    endpoint_url: str
    pid: int
    host: str
    port: int
    state_dir: Path

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE


# -- pure -----------------------------------------------------------------------------------------


def server_env(handle: ServerHandle, environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment variables that point AWS clients at the server (dummy credentials, never real ones)."""
    env = os.environ if environ is None else environ
    return {"AWS_ENDPOINT_URL": handle.endpoint_url, **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION") or "us-east-1"}


def export_lines(variables: Mapping[str, str]) -> str:
    """``export K=V`` lines for ``eval`` in a POSIX shell (values quoted)."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in variables.items())


def state_dir_from_env(environ: Optional[Mapping[str, str]] = None) -> Path:
    """``$LRF_S3_STATE_DIR``, else ``.lrflow/s3`` under the current directory."""
    env = os.environ if environ is None else environ
    return Path(env.get("LRF_S3_STATE_DIR") or DEFAULT_STATE_DIR)


def port_from_env(environ: Optional[Mapping[str, str]] = None) -> int:
    """``$LRF_S3_PORT`` (0 = any free port), else 5555."""
    env = os.environ if environ is None else environ
    raw = env.get("LRF_S3_PORT") or str(DEFAULT_PORT)
    if not raw.isdigit() or int(raw) > 65535:
        raise LocalS3Error(f"LRF_S3_PORT must be a port number 0-65535 (0 picks a free port). Received: {raw!r}.")
    return int(raw)


# -- I/O: processes -------------------------------------------------------------------------------


def find_server(state_dir: Path) -> Optional[ServerHandle]:
    """The server recorded in ``state_dir`` if its process is alive and is a moto server, else ``None``.

    A stale record (dead process, or a pid reused by another program) is ignored, so a
    foreign process is never signalled.
    """
    try:
        raw = json.loads((Path(state_dir) / STATE_FILE).read_text())
        handle = ServerHandle(raw["endpoint_url"], int(raw["pid"]), raw["host"], int(raw["port"]), Path(state_dir))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return handle if _is_our_server(handle.pid) else None


def _is_our_server(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive but someone else's: not ours
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: check the pid was not reused by another program
        with contextlib.suppress(OSError):
            return b"moto.server" in cmdline.read_bytes()
    return True


def start_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, state_dir: Path = DEFAULT_STATE_DIR, *,
                 detach: bool = True, timeout: float = 30.0) -> ServerHandle:
    """Start a moto S3 server on ``host:port`` in the background and wait until it answers HTTP.

    Returns the running server recorded in ``state_dir`` if there is one (idempotent).
    ``port=0`` picks a free port. With ``detach=True`` the process runs in its own session
    (Ctrl-C in the shell that started it does not stop it); with ``detach=False`` (tests) it
    shares the caller's process group, so an interrupted caller takes it down too, and on
    Linux it is also killed when the caller dies (even by SIGKILL), so no server outlives a
    test run. It logs to ``state_dir/server.log``.
    """
    state_dir = Path(state_dir)
    running = find_server(state_dir)
    if running is not None:
        return running
    state_dir.mkdir(parents=True, exist_ok=True)
    attempts = 3 if port == 0 else 1  # a picked free port can be taken before moto binds it
    for attempt in range(attempts):
        chosen = port or _free_port(host)
        handle, process = _launch(host, chosen, state_dir, detach)
        if _wait_until_up(handle, process, timeout):
            (state_dir / STATE_FILE).write_text(json.dumps(
                {**asdict(handle), "state_dir": str(state_dir)}, indent=2) + "\n")
            logger.info("moto S3 server %s (pid %d)", handle.endpoint_url, handle.pid)
            return handle
        _terminate(process.pid, process, timeout=5.0)
        logger.debug("moto server on port %d did not come up (attempt %d)", chosen, attempt + 1)
    raise LocalS3Error(f"The local S3 server did not start on {host}:{port or 'a free port'} within {timeout:.0f} s. "
                       f"See {state_dir / LOG_FILE}; if the port is taken, set LRF_S3_PORT or pass --port.")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _launch(host: str, port: int, state_dir: Path, detach: bool) -> tuple[ServerHandle, subprocess.Popen]:
    url_host = f"[{host}]" if ":" in host else host
    with open(state_dir / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "--host", host, "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=detach,
            preexec_fn=None if detach or not sys.platform.startswith("linux") else _die_with_parent,
        )
    return ServerHandle(f"http://{url_host}:{port}", process.pid, host, port, state_dir), process


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the parent process dies."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_until_up(handle: ServerHandle, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _answers_http(handle.endpoint_url):
            return True
        time.sleep(0.1)
    return False


def _answers_http(url: str) -> bool:
    try:
        # moto's own API route: answers only when the moto app is up, whatever the S3 state.
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is serving
    except (urllib.error.URLError, OSError):
        return False


def stop_server(handle: ServerHandle, *, timeout: float = 10.0) -> None:
    """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and remove its state record.

    Only the recorded pid is signalled, and only while it still is a moto server.
    """
    if _is_our_server(handle.pid):
        _terminate(handle.pid, None, timeout=timeout)
    record = Path(handle.state_dir) / STATE_FILE
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(record.read_text())["pid"]) == handle.pid:  # not a newer server's record
            record.unlink()


def _terminate(pid: int, process: Optional[subprocess.Popen], *, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, process, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, process, timeout)


def _wait_gone(pid: int, process: Optional[subprocess.Popen], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _reaped_or_gone(pid, process):
            return True
        time.sleep(0.05)
    return False


def _reaped_or_gone(pid: int, process: Optional[subprocess.Popen]) -> bool:
    if process is not None:
        return process.poll() is not None
    with contextlib.suppress(ChildProcessError):  # our child (same Python process): reap the zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def ensure_buckets(handle: ServerHandle, buckets: Sequence[str]) -> None:
    """Create ``buckets`` on the server (already existing ones are kept)."""
    from tasks import s3io

    client = _client_for(handle)
    for bucket in buckets:
        s3io.ensure_bucket(client, bucket)


def _client_for(handle: ServerHandle):
    import boto3
    from botocore.config import Config

    # Explicit dummy credentials: moto accepts any, and the caller's real ones must not be sent anywhere.
    session = boto3.session.Session(aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                    region_name="us-east-1")
    return session.client("s3", endpoint_url=handle.endpoint_url,
                          config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}))


# -- command line -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.local_s3",
        description="Run lrflow's embedded S3 (a moto server on loopback). `start` and `env` print export "
        "lines: eval \"$(python -m tasks.local_s3 start)\". State: $LRF_S3_STATE_DIR (default .lrflow/s3).",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start the server (or reuse the running one) and print export lines")
    start.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: loopback only)")
    start.add_argument("--port", type=int, help=f"port (default $LRF_S3_PORT or {DEFAULT_PORT}; 0 = a free port)")
    start.add_argument("--bucket", action="append",
                       help=f"bucket to create (repeatable; default $LRF_REGISTRY_BUCKET or `{DEFAULT_BUCKET}`)")
    sub.add_parser("stop", help="stop the server recorded in the state directory")
    sub.add_parser("status", help=f"say whether the server runs (exit {EXIT_NOT_RUNNING} if not)")
    sub.add_parser("env", help="print export lines for the running server")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    state_dir = state_dir_from_env()
    try:
        return _ACTIONS[args.action](args, state_dir)
    except LRFError as exc:
        print(f"local_s3: error: {exc}", file=sys.stderr)
        return 2


def _cmd_start(args: argparse.Namespace, state_dir: Path) -> int:
    running = find_server(state_dir)
    if running is not None:
        print(f"# local S3 already running at {running.endpoint_url} (pid {running.pid})", file=sys.stderr)
    port = port_from_env() if args.port is None else args.port
    handle = running or start_server(args.host, port, state_dir)
    if running is None:
        print(f"# local S3 started at {handle.endpoint_url} (pid {handle.pid}); log: {handle.log_path}",
              file=sys.stderr)
    buckets = args.bucket or [os.environ.get("LRF_REGISTRY_BUCKET") or DEFAULT_BUCKET]
    ensure_buckets(handle, buckets)
    sys.stdout.write(export_lines({**server_env(handle), "LRF_REGISTRY_BUCKET": buckets[0]}))
    return 0


def _cmd_stop(args: argparse.Namespace, state_dir: Path) -> int:
    running = find_server(state_dir)
    if running is None:
        print(f"local S3 is not running (state: {state_dir})", file=sys.stderr)
        return 0
    stop_server(running)
    print(f"local S3 stopped (pid {running.pid})", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace, state_dir: Path) -> int:
    running = find_server(state_dir)
    if running is None:
        print(f"local S3 is not running (state: {state_dir})")
        return EXIT_NOT_RUNNING
    print(f"local S3 running at {running.endpoint_url} (pid {running.pid}); log: {running.log_path}")
    return 0


def _cmd_env(args: argparse.Namespace, state_dir: Path) -> int:
    running = find_server(state_dir)
    if running is None:
        raise LocalS3Error(f"The local S3 is not running (state: {state_dir}). Start it: `infra/local/s3.sh start`.")
    sys.stdout.write(export_lines(server_env(running)))
    return 0


_ACTIONS = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status, "env": _cmd_env}


if __name__ == "__main__":
    sys.exit(main())
