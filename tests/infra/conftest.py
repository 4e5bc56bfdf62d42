"""Fixtures of the infra/ tests: the parsed compose file, CloudFormation template, Kubernetes objects."""

from __future__ import annotations

import pytest
import yaml

# Its assert helpers (assert_least_privilege) report values like test code does.
pytest.register_assert_rewrite("tests.infra.infra_files")

from tests.infra.infra_files import INFRA, load_cfn  # noqa: E402


@pytest.fixture(scope="session")
def cfn_template() -> dict:
    return load_cfn(INFRA / "aws" / "bucket-and-role.yaml")


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose" / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def k8s_documents() -> list[tuple[str, dict]]:
    """Every Kubernetes object under infra/k8s as ``(file name, object)``."""
    documents = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents
