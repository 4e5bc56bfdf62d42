"""Faults between lrflow and S3, injected by a loopback proxy in front of the real moto server.

Measured in every test: objects referenced by a manifest that do not exist (must be 0) and
versions visible without all their objects (must be 0).
"""

from __future__ import annotations

import pytest

from tasks import registry, s3io
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration
PREFIX = "lrflow"
NAME = "faults"


@pytest.fixture
def proxy(s3_server):
    p = FaultProxy(s3_server.endpoint_url)
    yield p
    p.close()


@pytest.fixture
def files(tmp_path):
    out = {}
    for i, key in enumerate(["model.keras", "model.tflite", "report.json", "report.md", "validation/gate.json"]):
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (1000 + i))
        out[key] = path
    return out


def _publish(client, bucket, files, version="v1"):
    return registry.publish_version(client, bucket, PREFIX, NAME, version, files, status="passed",
                                    gate={"passed": True}, lineage={"test": True})


def _lost_objects(client, bucket) -> int:
    """Objects a manifest references that are missing or differ: must be 0."""
    lost = 0
    for v in registry.list_versions(client, bucket, PREFIX, NAME):
        manifest = registry.read_manifest(client, bucket, PREFIX, NAME, v.version)
        root = registry.version_key(PREFIX, NAME, v.version)
        for key, entry in manifest.files.items():
            try:
                s3io.verify_object(client, bucket, s3io.join_key(root, key), sha256=entry.sha256, size=entry.size)
            except s3io.S3Error:
                lost += 1
    return lost


def test_server_gone_mid_publish_leaves_no_version_and_a_retry_completes(proxy, s3_bucket, files, s3_server):
    direct = s3io.s3_client(s3_server.endpoint_url)
    through = s3io.s3_client(proxy.endpoint_url)
    proxy.down_after("PUT", 2)  # two objects land, then the server "stops"
    with pytest.raises(s3io.S3EndpointError, match="interrupted|cannot connect"):
        _publish(through, s3_bucket, files)
    assert registry.list_versions(direct, s3_bucket, PREFIX, NAME) == []  # no manifest: nothing visible
    assert len(s3io.list_keys(direct, s3_bucket, PREFIX)) == 2  # the two uploads are unreferenced leftovers
    proxy.set_mode("pass")  # the server is back
    record = _publish(through, s3_bucket, files)
    assert record.version == "v1" and record.files == len(files)
    assert _lost_objects(direct, s3_bucket) == 0


@pytest.mark.parametrize("mode", ["error", "throttle"])
def test_transient_errors_are_retried_with_backoff(proxy, s3_bucket, files, mode, s3_server):
    through = s3io.s3_client(proxy.endpoint_url)
    proxy.fail_next(3, mode)  # within botocore's 5 attempts
    record = _publish(through, s3_bucket, files)
    assert proxy.faults == 3 and record.files == len(files)
    assert _lost_objects(s3io.s3_client(s3_server.endpoint_url), s3_bucket) == 0


def test_a_permanent_error_fails_clearly_and_publishes_nothing(proxy, s3_bucket, files, s3_server):
    through = s3io.s3_client(proxy.endpoint_url)
    proxy.set_mode("error")
    with pytest.raises(s3io.S3Error, match="InternalError"):
        _publish(through, s3_bucket, files)
    assert proxy.faults >= 5  # every attempt was made
    assert registry.list_versions(s3io.s3_client(s3_server.endpoint_url), s3_bucket, PREFIX, NAME) == []
