"""pytest plugin: one real moto S3 server per test session, on a free loopback port.

Register it with ``pytest_plugins = ["tests.s3_server"]`` in ``tests/conftest.py`` (or
``-p tests.s3_server`` on the command line, run from the repository root).

- ``s3_server`` (session): starts ``python -m moto.server`` as a subprocess through
  :func:`tasks.local_s3.start_server`, points AWS clients at it for the whole session
  (``AWS_ENDPOINT_URL``, dummy credentials, region; the developer's AWS profile and config
  files are hidden so they cannot leak in), and stops it at the end. Yields the
  :class:`~tasks.local_s3.ServerHandle` (``.endpoint_url``).
- ``s3_bucket`` (function): a fresh, uniquely named bucket on that server.

Every test using them is marked ``integration`` automatically.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tasks import local_s3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_s3.ServerHandle]:
    state_dir = tmp_path_factory.mktemp("s3-server")
    # detach=False: an interrupted test run takes the server down with it.
    handle = local_s3.start_server("127.0.0.1", 0, state_dir, detach=False)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in local_s3.server_env(handle).items():
                patch.setenv(key, value)
            for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                patch.delenv(key, raising=False)
            # A developer's ~/.aws files could carry a profile endpoint or addressing style.
            patch.setenv("AWS_CONFIG_FILE", str(state_dir / "no-aws-config"))
            patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(state_dir / "no-aws-credentials"))
            yield handle
    finally:
        local_s3.stop_server(handle)


@pytest.fixture(scope="session")
def _s3_admin_client(s3_server: local_s3.ServerHandle):
    from tasks import s3io

    return s3io.s3_client(s3_server.endpoint_url)


@pytest.fixture
def s3_bucket(_s3_admin_client) -> str:
    from tasks import s3io

    name = f"lrf-test-{uuid.uuid4().hex[:16]}"
    s3io.ensure_bucket(_s3_admin_client, name)
    return name


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "s3_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
