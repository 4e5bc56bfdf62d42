"""infra/aws: the CloudFormation template and the standalone IAM policy, checked without AWS.

cfn-lint checks the template against the CloudFormation resource specification; the other
tests check what the template must declare (moto does not apply all of it, see
test_cloudformation.py) and that the pipeline's policy is least-privilege.
"""

from __future__ import annotations

import json

import pytest

from tests.infra.infra_files import INFRA, assert_least_privilege

TEMPLATE = INFRA / "aws" / "bucket-and-role.yaml"
POLICY_JSON = INFRA / "aws" / "iam-policy.json"
LINT_REGIONS = ["us-east-1", "eu-west-1", "us-gov-west-1"]

def test_template_passes_cfn_lint():
    pytest.importorskip("cfnlint")
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(TEMPLATE, config=ManualArgs(regions=LINT_REGIONS, include_checks=["I"]))
    assert not matches, "\n".join(str(match) for match in matches)


def test_cfn_lint_flags_a_broken_copy_of_the_template():
    """The clean result above means something: the same call reports an invalid value."""
    pytest.importorskip("cfnlint")
    from cfnlint.api import ManualArgs, lint

    broken = TEMPLATE.read_text().replace("Status: Enabled", "Status: Sometimes", 1)
    matches = lint(broken, config=ManualArgs(regions=LINT_REGIONS))
    assert any(match.rule.id == "E3030" for match in matches), matches


def test_bucket_declares_versioning_encryption_and_no_public_access(cfn_template):
    bucket = cfn_template["Resources"]["RegistryBucket"]
    assert bucket["Type"] == "AWS::S3::Bucket"
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    properties = bucket["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    [rule] = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    condition, kms, sse_s3 = rule["ServerSideEncryptionByDefault"]["Fn::If"]
    assert condition == "UseKms"
    assert kms == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "KmsKeyArn"}}
    assert sse_s3 == {"SSEAlgorithm": "AES256"}
    assert properties["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True)
    assert properties["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    # No rule ever expires an object version; only unfinished uploads are cleaned up.
    for lifecycle_rule in properties["LifecycleConfiguration"]["Rules"]:
        assert set(lifecycle_rule) <= {"Id", "Status", "AbortIncompleteMultipartUpload"}, lifecycle_rule


def test_bucket_policy_refuses_requests_without_tls(cfn_template):
    policy = cfn_template["Resources"]["RegistryBucketPolicy"]
    assert policy["Properties"]["Bucket"] == {"Ref": "RegistryBucket"}
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    bucket_and_objects = [{"Fn::GetAtt": ["RegistryBucket", "Arn"]}, {"Fn::Sub": "${RegistryBucket.Arn}/*"}]
    tls = statements["DenyInsecureTransport"]
    assert (tls["Effect"], tls["Principal"], tls["Action"]) == ("Deny", "*", "s3:*")
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert tls["Resource"] == bucket_and_objects
    old_tls = statements["DenyTlsOlderThan12"]
    assert old_tls["Effect"] == "Deny" and old_tls["Condition"] == {"NumericLessThan": {"s3:TlsVersion": "1.2"}}
    assert all(s["Effect"] == "Deny" for s in statements.values()), "the bucket policy only takes away"


def test_role_is_assumable_only_by_the_given_principal(cfn_template):
    role = cfn_template["Resources"]["PipelineRole"]["Properties"]
    assert "RoleName" not in role, "a fixed name would need CAPABILITY_NAMED_IAM and block a second stack"
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement == {"Effect": "Allow", "Principal": {"AWS": {"Ref": "TrustedPrincipalArn"}},
                         "Action": "sts:AssumeRole"}
    assert "Default" not in cfn_template["Parameters"]["TrustedPrincipalArn"]


def test_kms_permissions_exist_only_with_a_kms_key_and_only_through_s3(cfn_template):
    kms = cfn_template["Resources"]["PipelineKmsPolicy"]
    assert kms["Condition"] == "UseKms"
    [statement] = kms["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Resource"] == {"Ref": "KmsKeyArn"}
    assert statement["Condition"]["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}


def test_template_outputs_what_lrflow_and_dvc_need(cfn_template):
    outputs = cfn_template["Outputs"]
    assert {"BucketName", "BucketArn", "RegistryUri", "DvcRemoteUrl", "PipelineRoleArn", "PipelinePolicyArn"} <= set(outputs)
    assert cfn_template["Parameters"]["RegistryPrefix"]["Default"] == "lrflow"   # registry.prefix in params.yaml
    assert cfn_template["Parameters"]["DvcPrefix"]["Default"] == "dvc"           # s3://lrflow/dvc in .dvc/config


def test_standalone_iam_policy_is_least_privilege():
    document = json.loads(POLICY_JSON.read_text())
    assert document["Version"] == "2012-10-17"
    assert_least_privilege(document, "arn:aws:s3:::lrflow")
