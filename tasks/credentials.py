"""S3 credentials from a Prefect ``AwsCredentials`` block (prefect-aws), or from the environment.

``registry.credentials_block: NAME`` in the parameters names a block a team created once
(UI, or ``AwsCredentials(aws_access_key_id=..., aws_secret_access_key=...).save(NAME)``);
the flow then needs no AWS variables, and the secret lives in Prefect's database, shown as
``********`` in the UI and never written to a file, a log or a report by lrflow. Without a
block, boto3 finds credentials in the environment, a profile or an instance role.
"""

from __future__ import annotations

from typing import Optional

from lrf_core.errors import LRFError
from tasks import s3io

__all__ = ["CredentialsBlockError", "s3_session", "registry_client"]


class CredentialsBlockError(LRFError, LookupError):
    """The named ``AwsCredentials`` block does not exist or cannot be read."""


def s3_session(block_name: Optional[str]):
    """A ``boto3.session.Session`` from the ``AwsCredentials`` block ``block_name`` (None: the environment's)."""
    if not block_name:
        return None
    from prefect_aws import AwsCredentials

    try:
        block = AwsCredentials.load(block_name)
    except ValueError as error:  # Prefect's "Unable to find block document named ..."
        raise CredentialsBlockError(
            f"No Prefect AwsCredentials block named {block_name!r} ({error}). Create it (Prefect UI → Blocks → AWS "
            "Credentials, or `AwsCredentials(aws_access_key_id=..., aws_secret_access_key=...).save(NAME)`), fix "
            "registry.credentials_block, or remove it to use the environment's credentials."
        ) from None
    return block.get_boto3_session()


def registry_client(endpoint_url: Optional[str], block_name: Optional[str]):
    """The registry's S3 client: ``endpoint_url`` (None: ``$AWS_ENDPOINT_URL`` or AWS), credentials of ``block_name``."""
    return s3io.s3_client(endpoint_url, session=s3_session(block_name))
