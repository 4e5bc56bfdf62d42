"""tasks.s3io: URI and key validation, error mapping, and checked I/O against a real moto server."""

from __future__ import annotations

import socket

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from lrf_core.errors import LRFError
from tasks import s3io


@pytest.fixture(scope="module")
def client(s3_server):
    return s3io.s3_client(s3_server.endpoint_url)


# -- pure: URIs, keys, checksums, error mapping -------------------------------------------------


def test_parse_s3_uri_splits_bucket_and_key():
    uri = s3io.parse_s3_uri("s3://lrflow-models/models/digits/model.keras")
    assert (uri.bucket, uri.key) == ("lrflow-models", "models/digits/model.keras")
    assert str(uri) == "s3://lrflow-models/models/digits/model.keras"
    assert s3io.parse_s3_uri("s3://lrflow-models/models/").key == "models"
    assert str(s3io.parse_s3_uri("s3://lrflow-models").join("a", "b.json")) == "s3://lrflow-models/a/b.json"


@pytest.mark.parametrize(("uri", "problem"), [
    ("s3://lrflow/models/../secrets", "'..'"),
    ("s3://lrflow/./model.keras", "'.'"),
    ("s3://lrflow//etc/passwd", "starts with '/'"),
    ("s3://lrflow/a\\b", "backslash"),
    ("s3://lrflow/a//b", "empty path segment"),
    ("s3://Bad_Bucket/k", "Invalid S3 bucket name"),
    ("s3://ab/k", "2 characters"),
    ("s3://my..bucket/k", "'..'"),
    ("s3://192.168.1.10/k", "IP address"),
    ("s3://-bucket/k", "starts/ends"),
    ("https://lrflow/k", "s3://BUCKET/KEY"),
])
def test_parse_s3_uri_rejects_unsafe_or_malformed_uris(uri, problem):
    with pytest.raises(s3io.S3UriError, match=None) as info:
        s3io.parse_s3_uri(uri)
    assert isinstance(info.value, LRFError) and isinstance(info.value, ValueError)
    assert problem in str(info.value)


def test_parse_s3_uri_can_require_a_key():
    assert s3io.parse_s3_uri("s3://lrflow").key == ""
    with pytest.raises(s3io.S3UriError, match="naming an object"):
        s3io.parse_s3_uri("s3://lrflow/", require_key=True)


def test_join_key_skips_an_empty_prefix_and_validates_the_result():
    assert s3io.join_key("", "models", "digits") == "models/digits"
    assert s3io.join_key("lrflow/", "models") == "lrflow/models"
    with pytest.raises(s3io.S3UriError, match="'..'"):
        s3io.join_key("lrflow", "../other")
    assert s3io.validate_prefix("") == ""
    assert s3io.validate_prefix("team/lrflow/") == "team/lrflow"


def test_checksum_conversions_round_trip():
    digest = s3io.sha256_bytes(b"abc")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert s3io.sha256_to_checksum(digest) == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    assert s3io.checksum_to_sha256(s3io.sha256_to_checksum(digest)) == digest
    assert s3io.checksum_to_sha256("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=-3") is None


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize(("exc", "kind", "words"), [
    (_client_error("PreconditionFailed", 412), s3io.S3ConflictError, "conditional write"),
    (_client_error("ConditionalRequestConflict", 409), s3io.S3ConflictError, "Re-read"),
    (_client_error("NoSuchBucket", 404), s3io.S3BucketNotFoundError, "Create it"),
    (_client_error("NoSuchKey", 404), s3io.S3NotFoundError, "does not exist"),
    (_client_error("InvalidAccessKeyId", 403), s3io.S3CredentialsError, "AWS_ACCESS_KEY_ID"),
    (NoCredentialsError(), s3io.S3CredentialsError, "AWS_SECRET_ACCESS_KEY"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), s3io.S3EndpointError, "infra/local/s3.sh start"),
    (_client_error("SlowDown", 503), s3io.S3Error, "SlowDown"),
])
def test_translate_error_maps_botocore_errors_to_clear_lrf_errors(exc, kind, words):
    error = s3io.translate_error(exc, operation="put_object", bucket="lrflow", key="k", endpoint="http://127.0.0.1:9")
    assert type(error) is kind and isinstance(error, LRFError)
    assert words in str(error)


# -- I/O against the moto server ------------------------------------------------------------------


def test_s3_client_reads_the_endpoint_from_the_environment_and_uses_path_style(s3_server):
    client = s3io.s3_client()
    assert client.meta.endpoint_url == s3_server.endpoint_url
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}


def test_put_bytes_stores_the_sha256_and_get_bytes_returns_the_content(client, s3_bucket):
    info = s3io.put_bytes(client, s3_bucket, "a/b.bin", b"hello")
    assert info.sha256 == s3io.sha256_bytes(b"hello") and info.size == 5
    head = s3io.head_object(client, s3_bucket, "a/b.bin")
    assert (head.sha256, head.size, head.etag) == (info.sha256, 5, info.etag)
    stored = s3io.get_bytes(client, s3_bucket, "a/b.bin")
    assert (stored.data, stored.etag) == (b"hello", info.etag)


def test_put_refuses_a_store_that_reports_another_checksum(client, s3_bucket):
    class WrongEcho:
        meta = client.meta

        def put_object(self, **kwargs):
            return {**client.put_object(**kwargs), "ChecksumSHA256": s3io.sha256_to_checksum("00" * 32)}

    with pytest.raises(s3io.ChecksumMismatchError, match="Upload it again"):
        s3io.put_bytes(WrongEcho(), s3_bucket, "k.bin", b"payload")


def test_put_bytes_if_absent_refuses_an_existing_object_and_keeps_it(client, s3_bucket):
    # moto 5.2.5 honours If-None-Match: * on PutObject (412 PreconditionFailed).
    s3io.put_bytes_if_absent(client, s3_bucket, "k.json", b"first")
    with pytest.raises(s3io.S3ConflictError, match="conditional write"):
        s3io.put_bytes_if_absent(client, s3_bucket, "k.json", b"second")
    assert s3io.get_bytes(client, s3_bucket, "k.json").data == b"first"


def test_put_bytes_if_match_replaces_only_the_version_that_was_read(client, s3_bucket):
    old = s3io.put_bytes(client, s3_bucket, "alias.json", b"v1")
    new = s3io.put_bytes_if_match(client, s3_bucket, "alias.json", b"v2", old.etag)
    assert s3io.get_bytes(client, s3_bucket, "alias.json").data == b"v2"
    with pytest.raises(s3io.S3ConflictError):  # the ETag read before the replacement is stale now
        s3io.put_bytes_if_match(client, s3_bucket, "alias.json", b"v3", old.etag)
    assert s3io.get_bytes(client, s3_bucket, "alias.json") == s3io.StoredBytes(b"v2", new.etag)
    with pytest.raises(s3io.S3NotFoundError):
        s3io.put_bytes_if_match(client, s3_bucket, "absent.json", b"x", new.etag)


def test_download_file_verifies_the_sha256_and_replaces_atomically(client, s3_bucket, tmp_path):
    s3io.put_bytes(client, s3_bucket, "model.keras", b"weights")
    dest = tmp_path / "out" / "model.keras"
    info = s3io.download_file(client, s3_bucket, "model.keras", dest, expected_sha256=s3io.sha256_bytes(b"weights"))
    assert dest.read_bytes() == b"weights" and info.sha256 == s3io.sha256_bytes(b"weights")

    s3io.put_bytes(client, s3_bucket, "model.keras", b"tampered")
    with pytest.raises(s3io.ChecksumMismatchError, match="was not written"):
        s3io.download_file(client, s3_bucket, "model.keras", dest, expected_sha256=s3io.sha256_bytes(b"weights"))
    assert dest.read_bytes() == b"weights"  # the old file is untouched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.keras"]  # no temporary file left


def test_object_exists_and_verify_object(client, s3_bucket):
    assert not s3io.object_exists(client, s3_bucket, "x.bin")
    s3io.put_bytes(client, s3_bucket, "x.bin", b"12345")
    assert s3io.object_exists(client, s3_bucket, "x.bin")
    s3io.verify_object(client, s3_bucket, "x.bin", sha256=s3io.sha256_bytes(b"12345"), size=5)
    with pytest.raises(s3io.ChecksumMismatchError, match="expected 4 bytes"):
        s3io.verify_object(client, s3_bucket, "x.bin", sha256=s3io.sha256_bytes(b"1234"), size=4)


def test_list_keys_returns_every_key_under_the_prefix(client, s3_bucket):
    for key in ("p/a", "p/b/c", "q/d"):
        s3io.put_bytes(client, s3_bucket, key, b"")
    assert s3io.list_keys(client, s3_bucket, "p/") == ["p/a", "p/b/c"]


def test_missing_bucket_says_to_create_it_or_fix_the_name(client, s3_server):
    missing = "lrf-no-such-bucket"
    calls = [lambda: s3io.get_bytes(client, missing, "k"), lambda: s3io.put_bytes(client, missing, "k", b"x"),
             lambda: s3io.object_exists(client, missing, "k"), lambda: s3io.list_keys(client, missing, "")]
    for call in calls:
        with pytest.raises(s3io.S3BucketNotFoundError) as info:
            call()
        assert f"`{missing}` does not exist at {s3_server.endpoint_url}" in str(info.value)
        assert "Create it" in str(info.value) and isinstance(info.value, FileNotFoundError)


def test_unreachable_endpoint_names_it_and_suggests_the_local_server(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # botocore signs before it connects
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    client = s3io.s3_client(endpoint, max_attempts=1)
    with pytest.raises(s3io.S3EndpointError) as info:
        s3io.get_bytes(client, "lrflow", "k")
    assert endpoint in str(info.value) and "infra/local/s3.sh start" in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_missing_credentials_name_the_variables_to_set(s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe
    with pytest.raises(s3io.S3CredentialsError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        s3io.get_bytes(s3io.s3_client(), "lrflow", "k")


def test_errors_never_contain_the_secret_key(client, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-this-secret")
    with pytest.raises(s3io.S3NotFoundError) as info:
        s3io.get_bytes(s3io.s3_client(), s3_bucket, "absent")
    assert "do-not-print-this-secret" not in str(info.value)


def test_upload_of_a_missing_local_file_is_a_clear_error(client, s3_bucket, tmp_path):
    with pytest.raises(s3io.LocalFileError, match="Cannot read .*missing.keras"):
        s3io.upload_file(client, s3_bucket, "model.keras", tmp_path / "missing.keras")
    assert s3io.list_keys(client, s3_bucket, "") == []
