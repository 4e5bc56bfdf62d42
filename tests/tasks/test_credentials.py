"""S3 credentials from a Prefect AwsCredentials block instead of the environment (real Prefect API, real moto server)."""

from __future__ import annotations

import pytest

from tasks import s3io, steps
from tasks.credentials import CredentialsBlockError, registry_client
from tasks.params import params_from_mapping

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

BLOCK = "lrf-test-registry"
KEY_ID, SECRET = "AKIDBLOCKONLY", "block-secret-4c1d"


@pytest.fixture(scope="module")
def saved_block(prefect_api):
    from prefect_aws import AwsCredentials

    AwsCredentials(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET).save(BLOCK, overwrite=True)
    return BLOCK


@pytest.fixture
def no_env_credentials(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def _params(bucket, block=None):
    return params_from_mapping({"name": "creds", "model": "unused.keras",
                                "registry": {"bucket": bucket, "credentials_block": block}})


def test_the_block_is_the_only_credential_source_needed(saved_block, s3_bucket, no_env_credentials):
    with pytest.raises(s3io.S3CredentialsError, match="no AWS credentials"):
        steps.check_registry(_params(s3_bucket))  # the environment has none left
    assert steps.check_registry(_params(s3_bucket, saved_block)) == f"s3://{s3_bucket}/lrflow"
    client = registry_client(None, saved_block)
    credentials = client._request_signer._credentials.get_frozen_credentials()
    assert (credentials.access_key, credentials.secret_key) == (KEY_ID, SECRET)
    client.put_object(Bucket=s3_bucket, Key="probe", Body=b"x")  # signed with the block's keys, accepted
    assert s3io.list_keys(client, s3_bucket, "") == ["probe"]


def test_a_missing_block_is_named_with_the_fix(prefect_api, s3_bucket):
    with pytest.raises(CredentialsBlockError, match=r"'no-such-block'.*AwsCredentials.*credentials_block"):
        steps.check_registry(_params(s3_bucket, "no-such-block"))


def test_a_block_name_is_validated_at_the_edge():
    from lrf_core.errors import PlanError

    with pytest.raises(PlanError, match=r"`registry\.credentials_block`: String should match pattern"):
        _params("bucket", "../etc/passwd")
