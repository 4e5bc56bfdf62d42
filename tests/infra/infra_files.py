"""Helpers for the infra/ tests: the repository paths and loaders for the declarative files.

infra/ holds declarative files only (nothing imports it); the tests parse them as the tools
would: YAML with CloudFormation's short tags, compose's ``${VAR:-default}`` interpolation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

# Names of settings that hold secrets, wherever they appear (compose, Kubernetes, .env).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH_STRING|API_KEY|ACCESS_KEY|KMS_SECRET|TOKEN", re.IGNORECASE)


class CfnLoader(yaml.SafeLoader):
    """YAML loader for CloudFormation templates: ``!Ref X`` → ``{"Ref": X}``, ``!Sub s`` → ``{"Fn::Sub": s}``."""


def _cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_cfn(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(LookupError):
    """A ``${VAR:?message}`` whose variable is unset or empty: compose refuses to start."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?m}``, ``${V?m}``, ``$$``."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if unset else value
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""

    return _VAR.sub(one, text)


def interpolate_tree(node, env: Mapping[str, str]):
    """``interpolate`` applied to every string of a parsed compose file."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a compose .env file (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


# What lrflow does with S3 (tasks/s3io.py): GET/HEAD objects, conditional PUTs, listings.
# Nothing else may be allowed.
PIPELINE_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def assert_least_privilege(document: dict, bucket_arn: str, prefixes=("lrflow", "dvc")) -> None:
    """The pipeline policy: objects under the prefixes only, listing scoped, nothing deleted.

    Applied to infra/aws/iam-policy.json and to the policy the template deployed to moto.
    """
    allowed: dict[str, set] = {}
    denied: set[str] = set()
    for statement in document["Statement"]:
        actions = _as_list(statement["Action"])
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        resources = _as_list(statement["Resource"])
        assert "*" not in resources, statement
        if statement["Effect"] == "Deny":
            denied.update(actions)
            continue
        assert not any("*" in action for action in actions), f"wildcard action in {statement}"
        for action in actions:
            allowed.setdefault(action, set()).update(resources)
        if "s3:ListBucket" in actions:
            assert statement["Condition"]["StringLikeIfExists"]["s3:prefix"] == [f"{p}/*" for p in prefixes]
    assert set(allowed) == PIPELINE_ACTIONS
    objects = {f"{bucket_arn}/{prefix}/*" for prefix in prefixes}
    assert allowed["s3:GetObject"] == allowed["s3:PutObject"] == objects
    assert allowed["s3:ListBucket"] == {bucket_arn}
    # Versions are immutable: no principal with this policy deletes one, whatever else it has.
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutBucketVersioning", "s3:PutBucketPolicy"} <= denied
