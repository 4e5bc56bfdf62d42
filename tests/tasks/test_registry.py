"""tasks.registry on a real moto server: immutable versions, manifest last, aliases by compare-and-swap.

The `lrf registry` command (flows/registry_cli.py) is tested at the end, through a parser
built with `add_registry_parser`.
"""

from __future__ import annotations

import argparse
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from flows.registry_cli import add_registry_parser, cmd_registry
from lrf_core.errors import LRFError
from tasks import registry, s3io

PREFIX = "team/lrflow"
NAME = "digits-cnn"
GATE = {"passed": True, "accuracy_drop": 0.4, "max_drop": 1.0}
LINEAGE = {"parent_sha256": "ab" * 32, "calibration_sha256": "cd" * 32, "params": {"max_drop": 1.0},
           "lrflow": "0.1.0"}


@pytest.fixture(scope="module")
def client(s3_server):
    return s3io.s3_client(s3_server.endpoint_url)


def _write_files(root: Path, tag: str = "") -> dict[str, Path]:
    """A version's files, including nested validation output: relative key -> local path."""
    contents = {
        "model.keras": b"keras-zip" + tag.encode() + bytes(range(256)) * 4,
        "model.tflite": b"tflite" + tag.encode(),
        "report.json": json.dumps({"params_kept": 0.3, "tag": tag}).encode(),
        "report.md": b"# report\n",
        "pareto.png": b"\x89PNG" + tag.encode(),
        "validation/results.json": b'{"success": true}',
        "validation/data_docs/index.html": b"<html></html>",
    }
    files = {}
    for key, data in contents.items():
        path = root.joinpath(tag or "base", *key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[key] = path
    return files


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    return _write_files(tmp_path)


def _publish(client, bucket, version, files, *, status="passed", name=NAME, **options):
    return registry.publish_version(client, bucket, PREFIX, name, version, files, status=status, gate=GATE,
                                    lineage=LINEAGE, **options)


def _snapshot(client, bucket) -> dict[str, s3io.StoredBytes]:
    return {key: s3io.get_bytes(client, bucket, key) for key in s3io.list_keys(client, bucket, "")}


class RecordingClient:
    """A real client whose put_object calls are recorded, and the `fail_on`-th one fails as a dropped connection."""

    def __init__(self, client, fail_on: int | None = None):
        self._client, self._fail_on, self.puts = client, fail_on, []

    def put_object(self, **kwargs):
        self.puts.append(kwargs)
        if len(self.puts) == self._fail_on:
            raise EndpointConnectionError(endpoint_url=self._client.meta.endpoint_url)
        return self._client.put_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


class LostResponses(RecordingClient):
    """Every put_object reaches S3 twice, as when botocore retries a write whose response was lost."""

    def put_object(self, **kwargs):
        self._client.put_object(**kwargs)
        return self._client.put_object(**kwargs)


# -- publish ------------------------------------------------------------------------------------


def test_publish_manifest_matches_the_objects_actually_stored(client, s3_bucket, files):
    started = datetime.now(timezone.utc)
    record = _publish(client, s3_bucket, "v1", files)

    manifest = registry.read_manifest(client, s3_bucket, PREFIX, NAME, "v1")
    assert set(manifest.files) == set(files)
    root = f"{PREFIX}/models/{NAME}/versions/v1"
    for key, entry in manifest.files.items():
        stored = s3io.get_bytes(client, s3_bucket, f"{root}/{key}").data
        assert (entry.sha256, entry.size) == (s3io.sha256_bytes(stored), len(stored))
        assert stored == files[key].read_bytes()
    assert sorted(s3io.list_keys(client, s3_bucket, root + "/")) == sorted(
        [f"{root}/{k}" for k in files] + [f"{root}/manifest.json"])
    assert (manifest.name, manifest.version, manifest.status, manifest.schema_version) == (NAME, "v1", "passed", 1)
    assert (manifest.gate, manifest.lineage) == (GATE, LINEAGE)
    assert started - timedelta(seconds=1) <= manifest.created_at <= datetime.now(timezone.utc)
    assert manifest.created_at.utcoffset() == timedelta(0)
    assert record == registry.VersionRecord(NAME, "v1", "passed", manifest.created_at,
                                            f"s3://{s3_bucket}/{root}/", len(files),
                                            sum(p.stat().st_size for p in files.values()))


def test_manifest_is_the_last_object_written_and_only_if_absent(client, s3_bucket, files):
    recording = RecordingClient(client)
    _publish(recording, s3_bucket, "v1", files)
    keys = [put["Key"] for put in recording.puts]
    assert keys[-1].endswith("/v1/manifest.json") and len(keys) == len(files) + 1
    assert all(put.get("IfNoneMatch") == "*" for put in recording.puts)  # files too: nothing is overwritten


def test_publishing_a_version_twice_fails_and_changes_nothing(client, s3_bucket, files, tmp_path):
    _publish(client, s3_bucket, "v1", files)
    before = _snapshot(client, s3_bucket)
    for again in (files, _write_files(tmp_path, "other")):
        with pytest.raises(registry.VersionExistsError, match="immutable"):
            _publish(client, s3_bucket, "v1", again)
        with pytest.raises(registry.VersionExistsError, match="rejected|immutable"):
            _publish(client, s3_bucket, "v1", again, status="rejected")
    assert _snapshot(client, s3_bucket) == before


def test_exist_ok_accepts_only_an_identical_republish(client, s3_bucket, files, tmp_path):
    first = _publish(client, s3_bucket, "v1", files)
    assert _publish(client, s3_bucket, "v1", files, exist_ok=True) == first
    with pytest.raises(registry.VersionExistsError, match="different files"):
        _publish(client, s3_bucket, "v1", _write_files(tmp_path, "other"), exist_ok=True)


def test_failed_upload_midway_leaves_no_visible_version_and_a_retry_completes(client, s3_bucket, files, tmp_path):
    failing = RecordingClient(client, fail_on=3)
    with pytest.raises(s3io.S3EndpointError):
        _publish(failing, s3_bucket, "v1", files)
    root = f"{PREFIX}/models/{NAME}/versions/v1/"
    assert len(s3io.list_keys(client, s3_bucket, root)) == 2  # two files landed, no manifest
    assert registry.list_versions(client, s3_bucket, PREFIX, NAME) == []
    assert registry.list_models(client, s3_bucket, PREFIX) == []
    with pytest.raises(registry.VersionNotFoundError):
        registry.show_version(client, s3_bucket, PREFIX, NAME, "v1")

    record = _publish(client, s3_bucket, "v1", files)
    assert [r.version for r in registry.list_versions(client, s3_bucket, PREFIX, NAME)] == ["v1"]
    assert record.files == len(files)
    downloaded = registry.download_version(client, s3_bucket, PREFIX, NAME, "v1", tmp_path / "download")
    assert all((downloaded / key).read_bytes() == path.read_bytes() for key, path in files.items())


def test_conditional_writes_that_landed_before_a_retry_count_as_done(client, s3_bucket, files, tmp_path):
    retried = LostResponses(client)
    record = _publish(retried, s3_bucket, "v1", files)
    assert registry.list_versions(client, s3_bucket, PREFIX, NAME) == [record]
    moved = registry.promote(retried, s3_bucket, PREFIX, NAME, "production", "v1")
    assert registry.read_alias(client, s3_bucket, PREFIX, NAME, "production") == moved
    _publish(client, s3_bucket, "v2", _write_files(tmp_path, "two"))
    registry.promote(retried, s3_bucket, PREFIX, NAME, "production", "v2")
    assert _history(client, s3_bucket) == [("v1", "promote"), ("v2", "promote")]


def test_missing_local_file_is_refused_before_anything_is_uploaded(client, s3_bucket, files, tmp_path):
    with pytest.raises(s3io.LocalFileError, match="absent.html"):
        _publish(client, s3_bucket, "v1", {**files, "validation/zz/absent.html": tmp_path / "absent.html"})
    assert s3io.list_keys(client, s3_bucket, "") == []


def test_leftover_files_with_other_bytes_block_the_same_version(client, s3_bucket, files, tmp_path):
    # A failed (or concurrent) publish left files; publishing other bytes as that version must not mix them.
    with pytest.raises(s3io.S3EndpointError):
        _publish(RecordingClient(client, fail_on=4), s3_bucket, "v1", files)
    with pytest.raises(registry.VersionExistsError, match="already holds other bytes"):
        _publish(client, s3_bucket, "v1", _write_files(tmp_path, "other"))
    assert not s3io.object_exists(client, s3_bucket, registry.manifest_key(PREFIX, NAME, "v1"))


def test_content_version_is_deterministic_and_changes_with_any_file(files, tmp_path):
    version = registry.content_version(files)
    assert len(version) == 12 and int(version, 16) >= 0
    assert registry.content_version(dict(reversed(list(files.items())))) == version
    changed = dict(files, **{"report.md": tmp_path / "other.md"})
    (tmp_path / "other.md").write_bytes(b"# other\n")
    assert registry.content_version(changed) != version
    renamed = {("renamed.keras" if k == "model.keras" else k): p for k, p in files.items()}
    assert registry.content_version(renamed) != version


@pytest.mark.parametrize("key", ["../model.keras", "/abs/model.keras", "a/../b", "a\\b", "a//b", "", "a/./b",
                                 "manifest.json", "space name.txt"])
def test_unsafe_file_keys_are_refused_before_any_request(key, files):
    no_client = object()  # any request would fail with AttributeError, not the validation error
    with pytest.raises(registry.RegistryNameError, match="Invalid file key"):
        registry.publish_version(no_client, "lrflow", PREFIX, NAME, "v1", {key: files["model.keras"]},
                                 status="passed", gate=GATE, lineage=LINEAGE)


@pytest.mark.parametrize(("name", "version", "status"), [
    ("bad/name", "v1", "passed"), ("..", "v1", "passed"), ("-x", "v1", "passed"), (NAME, "v..1", "passed"),
    (NAME, "v/1", "passed"), (NAME, "v1", "maybe"),
])
def test_bad_names_versions_and_statuses_are_refused(name, version, status, files):
    with pytest.raises(registry.RegistryError) as info:
        registry.publish_version(object(), "lrflow", PREFIX, name, version, files, status=status, gate=GATE,
                                 lineage=LINEAGE)
    assert isinstance(info.value, LRFError) and "xpected" in str(info.value)


def test_gate_summary_must_be_plain_json(client, s3_bucket, files):
    with pytest.raises(registry.RegistryError, match="gate summary must be plain JSON"):
        registry.publish_version(client, s3_bucket, PREFIX, NAME, "v1", files, status="passed",
                                 gate={"drop": float("nan")}, lineage=LINEAGE)


# -- list, show, download -----------------------------------------------------------------------


def test_lists_show_only_versions_with_a_manifest(client, s3_bucket, files, tmp_path):
    _publish(client, s3_bucket, "v1", files)
    _publish(client, s3_bucket, "v2", _write_files(tmp_path, "two"), status="rejected")
    s3io.put_bytes(client, s3_bucket, f"{PREFIX}/models/{NAME}/versions/v3/model.keras", b"half")
    s3io.put_bytes(client, s3_bucket, f"{PREFIX}/models/orphan/versions/v1/model.keras", b"half")

    versions = registry.list_versions(client, s3_bucket, PREFIX, NAME)
    assert [(r.version, r.status) for r in versions] == [("v1", "passed"), ("v2", "rejected")]
    assert versions[0].created_at <= versions[1].created_at
    assert registry.list_models(client, s3_bucket, PREFIX) == [registry.ModelSummary(NAME, ("v1", "v2"), {})]
    assert registry.list_versions(client, s3_bucket, PREFIX, "orphan") == []


def test_show_version_lists_the_aliases_pointing_at_it(client, s3_bucket, files, tmp_path):
    _publish(client, s3_bucket, "v1", files)
    _publish(client, s3_bucket, "v2", _write_files(tmp_path, "two"))
    for alias, version in (("production", "v1"), ("staging", "v2"), ("canary", "v2")):
        registry.promote(client, s3_bucket, PREFIX, NAME, alias, version)
    assert registry.show_version(client, s3_bucket, PREFIX, NAME, "v2").aliases == ("canary", "staging")
    details = registry.show_version(client, s3_bucket, PREFIX, NAME, "v1")
    assert details.aliases == ("production",) and details.manifest.files["report.md"].size == 9
    assert registry.list_models(client, s3_bucket, PREFIX)[0].aliases == {
        "canary": "v2", "production": "v1", "staging": "v2"}


def test_download_version_verifies_every_checksum(client, s3_bucket, files, tmp_path):
    _publish(client, s3_bucket, "v1", files)
    dest = registry.download_version(client, s3_bucket, PREFIX, NAME, "v1", tmp_path / "dl" / "v1")
    for key, path in files.items():
        assert dest.joinpath(*key.split("/")).read_bytes() == path.read_bytes()
    manifest = json.loads((dest / "manifest.json").read_bytes())
    assert manifest == registry.read_manifest(client, s3_bucket, PREFIX, NAME, "v1").model_dump(mode="json")

    s3io.put_bytes(client, s3_bucket, f"{PREFIX}/models/{NAME}/versions/v1/validation/results.json", b"forged")
    target = tmp_path / "dl" / "again"
    with pytest.raises(s3io.ChecksumMismatchError, match="validation/results.json is corrupt or was modified"):
        registry.download_version(client, s3_bucket, PREFIX, NAME, "v1", target)
    assert not target.exists() and sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["v1"]


def test_download_version_refuses_a_non_empty_directory(client, s3_bucket, files, tmp_path):
    _publish(client, s3_bucket, "v1", files)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(s3io.LocalFileError, match="not an empty directory"):
        registry.download_version(client, s3_bucket, PREFIX, NAME, "v1", tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_empty_prefix_puts_the_registry_at_the_bucket_root(client, s3_bucket, files):
    registry.publish_version(client, s3_bucket, "", NAME, "v1", files, status="passed", gate={}, lineage={})
    assert s3io.object_exists(client, s3_bucket, f"models/{NAME}/versions/v1/manifest.json")
    assert [m.name for m in registry.list_models(client, s3_bucket, "")] == [NAME]


def test_missing_bucket_gives_the_create_or_fix_error(client, files):
    with pytest.raises(s3io.S3BucketNotFoundError, match="`lrf-missing-bucket` does not exist.*Create it"):
        _publish(client, "lrf-missing-bucket", "v1", files)
    with pytest.raises(s3io.S3BucketNotFoundError):
        registry.list_models(client, "lrf-missing-bucket", PREFIX)


# -- aliases ------------------------------------------------------------------------------------


@pytest.fixture
def three_versions(client, s3_bucket, files, tmp_path):
    """v1, v2, v3 passed; bad rejected."""
    _publish(client, s3_bucket, "v1", files)
    for version in ("v2", "v3"):
        _publish(client, s3_bucket, version, _write_files(tmp_path, version))
    _publish(client, s3_bucket, "bad", _write_files(tmp_path, "bad"), status="rejected")
    return s3_bucket


def _history(client, bucket, alias="production"):
    document = registry.read_alias(client, bucket, PREFIX, NAME, alias)
    return [(e.version, e.action) for e in document.history]


def test_promote_moves_the_alias_and_records_history(client, three_versions):
    bucket = three_versions
    first = registry.promote(client, bucket, PREFIX, NAME, "production", "v1")
    second = registry.promote(client, bucket, PREFIX, NAME, "production", "v2")
    assert registry.resolve(client, bucket, PREFIX, NAME, "production") == "v2"
    assert _history(client, bucket) == [("v1", "promote"), ("v2", "promote")]
    assert second.updated_at >= first.updated_at and second.history[-1].updated_at == second.updated_at
    stored = json.loads(s3io.get_bytes(client, bucket, f"{PREFIX}/models/{NAME}/aliases/production.json").data)
    assert set(stored) == {"alias", "version", "updated_at", "history"} and stored["version"] == "v2"
    # promoting the current version again is a no-op, not a new history entry
    assert registry.promote(client, bucket, PREFIX, NAME, "production", "v2") == second


def test_promoting_a_rejected_or_missing_version_fails_and_leaves_the_alias(client, three_versions):
    bucket = three_versions
    registry.promote(client, bucket, PREFIX, NAME, "production", "v1")
    key = f"{PREFIX}/models/{NAME}/aliases/production.json"
    before = s3io.get_bytes(client, bucket, key)
    with pytest.raises(registry.VersionRejectedError, match="status `rejected`"):
        registry.promote(client, bucket, PREFIX, NAME, "production", "bad")
    s3io.put_bytes(client, bucket, f"{PREFIX}/models/{NAME}/versions/v9/model.keras", b"no manifest")
    for missing in ("v9", "v404"):
        with pytest.raises(registry.VersionNotFoundError, match=f"no published version {missing}"):
            registry.promote(client, bucket, PREFIX, NAME, "production", missing)
    assert s3io.get_bytes(client, bucket, key) == before
    with pytest.raises(registry.VersionRejectedError):
        registry.promote(client, bucket, PREFIX, NAME, "staging", "bad")
    assert registry.find_alias(client, bucket, PREFIX, NAME, "staging") is None


def test_rollback_restores_the_previous_version_and_walks_back(client, three_versions):
    bucket = three_versions
    for version in ("v1", "v2", "v3"):
        registry.promote(client, bucket, PREFIX, NAME, "production", version)
    assert registry.rollback(client, bucket, PREFIX, NAME, "production").version == "v2"
    assert registry.rollback(client, bucket, PREFIX, NAME, "production").version == "v1"
    with pytest.raises(registry.NoPreviousVersionError, match="no previous version"):
        registry.rollback(client, bucket, PREFIX, NAME, "production")
    assert registry.resolve(client, bucket, PREFIX, NAME, "production") == "v1"
    assert _history(client, bucket) == [("v1", "promote"), ("v2", "promote"), ("v3", "promote"),
                                        ("v2", "rollback"), ("v1", "rollback")]


def test_rollback_of_a_missing_alias_says_how_to_create_it(client, three_versions):
    with pytest.raises(registry.AliasNotFoundError, match="lrf registry promote digits-cnn VERSION --alias prod"):
        registry.rollback(client, three_versions, PREFIX, NAME, "prod")


@pytest.mark.parametrize("existing", [True, False], ids=["replace", "create"])
def test_racing_promotions_have_exactly_one_winner_and_lose_no_history(client, three_versions, existing, s3_server):
    bucket = three_versions
    if existing:
        registry.promote(client, bucket, PREFIX, NAME, "production", "v1")
    both_read = threading.Barrier(2, timeout=10)
    first_done = threading.Event()
    outcomes: dict[str, object] = {}

    # Both threads read the alias (same ETag, or both see it absent) before either writes; then
    # "v2" writes first and "v3" writes with what it read, which is stale by then.
    def hook(version):
        def before_write():
            both_read.wait()
            if version == "v3":
                first_done.wait(10)
        return before_write

    def run(version):
        try:
            outcomes[version] = registry.promote(s3io.s3_client(s3_server.endpoint_url), bucket, PREFIX, NAME,
                                                 "production", version, before_write=hook(version))
        except LRFError as exc:
            outcomes[version] = exc
        finally:
            if version == "v2":
                first_done.set()

    threads = [threading.Thread(target=run, args=(v,)) for v in ("v2", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert isinstance(outcomes["v2"], registry.Alias)
    assert isinstance(outcomes["v3"], registry.AliasConflictError)
    assert "changed while moving it" in str(outcomes["v3"])
    earlier = [("v1", "promote")] if existing else []
    assert _history(client, bucket) == [*earlier, ("v2", "promote")]
    registry.promote(client, bucket, PREFIX, NAME, "production", "v3")  # the loser re-reads and retries
    assert _history(client, bucket) == [*earlier, ("v2", "promote"), ("v3", "promote")]


# -- references and configuration ---------------------------------------------------------------


def test_registry_refs_parse_aliases_and_pinned_versions():
    assert registry.parse_registry_ref("registry:digits-cnn@production") == registry.RegistryRef(
        "digits-cnn", alias="production")
    pinned = registry.parse_registry_ref("registry:digits-cnn/3f2a9c1b0d4e")
    assert (pinned.name, pinned.version, pinned.alias) == ("digits-cnn", "3f2a9c1b0d4e", None)
    assert str(pinned) == "registry:digits-cnn/3f2a9c1b0d4e"
    assert registry.is_registry_ref("registry:x@y") and not registry.is_registry_ref("model.keras")
    for bad in ("registry:digits-cnn", "registry:@production", "registry:digits-cnn@Prod", "registry:a/../b",
                "s3://bucket/model.keras", "registry:digits-cnn/"):
        with pytest.raises(registry.RegistryNameError):
            registry.parse_registry_ref(bad)


def test_resolve_ref_follows_an_alias_or_checks_a_pinned_version(client, three_versions):
    bucket = three_versions
    registry.promote(client, bucket, PREFIX, NAME, "production", "v2")
    assert registry.resolve_ref(client, bucket, PREFIX, registry.parse_registry_ref(f"registry:{NAME}@production")) \
        == "v2"
    assert registry.resolve_ref(client, bucket, PREFIX, registry.parse_registry_ref(f"registry:{NAME}/v3")) == "v3"
    with pytest.raises(registry.VersionNotFoundError):
        registry.resolve_ref(client, bucket, PREFIX, registry.parse_registry_ref(f"registry:{NAME}/v7"))
    with pytest.raises(registry.AliasNotFoundError):
        registry.resolve_ref(client, bucket, PREFIX, registry.parse_registry_ref(f"registry:{NAME}@staging"))


def test_registry_config_from_env():
    config = registry.RegistryConfig.from_env({"LRF_REGISTRY_BUCKET": "lrflow-models",
                                               "AWS_ENDPOINT_URL": "http://127.0.0.1:5555"})
    assert config == registry.RegistryConfig("lrflow-models", "lrflow", "http://127.0.0.1:5555")
    assert config.uri == "s3://lrflow-models/lrflow/"
    assert registry.RegistryConfig.from_env({"LRF_REGISTRY_BUCKET": "b-1", "LRF_REGISTRY_PREFIX": "x/"}).prefix == "x"
    with pytest.raises(registry.RegistryConfigError, match="Set LRF_REGISTRY_BUCKET"):
        registry.RegistryConfig.from_env({})
    with pytest.raises(registry.RegistryConfigError, match="Invalid S3 bucket name"):
        registry.RegistryConfig("Not_A_Bucket")
    with pytest.raises(registry.RegistryConfigError, match="'..'"):
        registry.RegistryConfig("lrflow", "../up")


def test_alias_stack_pushes_promotions_and_pops_rollbacks():
    now = datetime.now(timezone.utc)
    events = [registry.AliasEvent(version=v, updated_at=now, action=a)
              for v, a in (("v1", "promote"), ("v2", "promote"), ("v3", "promote"), ("v2", "rollback"),
                           ("v4", "promote"))]
    assert registry.alias_stack(events) == ["v1", "v2", "v4"]
    assert registry.alias_stack(events[:4]) == ["v1", "v2"]


def test_stored_documents_of_another_schema_are_refused(client, three_versions):
    key = registry.manifest_key(PREFIX, NAME, "v1")
    raw = json.loads(s3io.get_bytes(client, three_versions, key).data)
    uri = f"s3://{three_versions}/{key}"
    with pytest.raises(registry.ManifestError, match="schema_version 2"):
        registry.parse_manifest(json.dumps({**raw, "schema_version": 2}).encode(), name=NAME, version="v1", uri=uri)
    with pytest.raises(registry.ManifestError, match="describes digits-cnn/v1, not digits-cnn/v2"):
        registry.parse_manifest(json.dumps(raw).encode(), name=NAME, version="v2", uri=uri)
    evil = {**raw, "files": {"../../outside.txt": raw["files"]["report.md"]}}
    with pytest.raises(registry.ManifestError, match="Invalid file key '../../outside.txt'"):
        registry.parse_manifest(json.dumps(evil).encode(), name=NAME, version="v1", uri=uri)
    with pytest.raises(registry.ManifestError, match="not valid JSON"):
        registry.parse_manifest(b"{", name=NAME, version="v1", uri=uri)


# -- the `lrf registry` command -----------------------------------------------------------------


def _lrf_registry(capsys, *argv):
    parser = argparse.ArgumentParser(prog="lrf")
    add_registry_parser(parser.add_subparsers(dest="command", required=True), argparse.RawDescriptionHelpFormatter)
    status = cmd_registry(parser.parse_args(["registry", *argv]))
    out, _ = capsys.readouterr()
    return status, out


def test_cli_list_show_promote_rollback_json(client, three_versions, capsys):
    where = ["--bucket", three_versions, "--prefix", PREFIX, "--json"]
    status, out = _lrf_registry(capsys, "list", *where)
    assert status == 0
    assert json.loads(out) == {"registry": f"s3://{three_versions}/{PREFIX}/", "models": [
        {"name": NAME, "versions": ["bad", "v1", "v2", "v3"], "aliases": {}}]}

    _, out = _lrf_registry(capsys, "promote", NAME, "v1", "--alias", "production", *where)
    moved = json.loads(out)
    assert (moved["name"], moved["alias"], moved["version"], moved["previous"]) == (NAME, "production", "v1", None)
    _, out = _lrf_registry(capsys, "promote", NAME, "v2", "--alias", "production", *where)
    assert (json.loads(out)["version"], json.loads(out)["previous"]) == ("v2", "v1")
    with pytest.raises(registry.VersionRejectedError):
        _lrf_registry(capsys, "promote", NAME, "bad", "--alias", "production", *where)

    _, out = _lrf_registry(capsys, "list", NAME, *where)
    listed = {v["version"]: v for v in json.loads(out)["versions"]}
    assert listed["v2"]["aliases"] == ["production"] and listed["v1"]["aliases"] == []
    assert listed["bad"]["status"] == "rejected" and listed["v1"]["files"] == 7

    _, out = _lrf_registry(capsys, "show", NAME, "@production", *where)
    shown = json.loads(out)
    assert (shown["version"], shown["aliases"]) == ("v2", ["production"])
    assert shown["manifest"] == registry.read_manifest(client, three_versions, PREFIX, NAME, "v2").model_dump(
        mode="json")

    _, out = _lrf_registry(capsys, "rollback", NAME, "--alias", "production", *where)
    rolled = json.loads(out)
    assert (rolled["version"], rolled["previous"]) == ("v1", "v2")
    assert [e["action"] for e in rolled["history"]] == ["promote", "promote", "rollback"]
    assert registry.resolve(client, three_versions, PREFIX, NAME, "production") == "v1"


def test_cli_tables_and_environment_defaults(three_versions, capsys, monkeypatch):
    monkeypatch.setenv("LRF_REGISTRY_BUCKET", three_versions)
    monkeypatch.setenv("LRF_REGISTRY_PREFIX", PREFIX)
    _, out = _lrf_registry(capsys, "promote", NAME, "v3", "--alias", "production")
    assert "production → v3 (new alias)" in out
    _, out = _lrf_registry(capsys, "list")
    assert NAME in out and "production → v3" in out
    _, out = _lrf_registry(capsys, "list", NAME)
    assert "rejected" in out and "v3" in out
    _, out = _lrf_registry(capsys, "show", NAME, "v3")
    assert "validation/data_docs/index.html" in out and "accuracy_drop" in out
    monkeypatch.delenv("LRF_REGISTRY_BUCKET")
    with pytest.raises(registry.RegistryConfigError, match="--bucket"):
        _lrf_registry(capsys, "list")
