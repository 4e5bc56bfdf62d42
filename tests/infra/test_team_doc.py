"""docs/team.md and infra/README.md: every repository file they name exists, every command matches the stack."""

from __future__ import annotations

import re

import pytest

from tests.infra.infra_files import REPO

DOCS = ["docs/team.md", "infra/README.md"]
PATH = re.compile(r"`((?:infra|docs|tests|tasks|flows)/[\w./-]+|prefect\.yaml|params\.yaml|\.dvc/config)`")


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_named_in_the_doc_exists(doc):
    text = (REPO / doc).read_text()
    named = {match.group(1).rstrip("/") for match in PATH.finditer(text)}
    assert named, doc
    base = (REPO / doc).parent
    missing = [path for path in named if not (REPO / path).exists() and not (base / path).exists()]
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_team_doc_uses_the_stack_s_names_and_addresses():
    text = (REPO / "docs" / "team.md").read_text()
    for expected in ("prefect deploy --all", "--pool lrflow --type process", "dvc remote modify --local storage endpointurl",
                     "lrf flow run fleet.yaml --dask tcp://127.0.0.1:8786", "lrf registry promote",
                     "lrf registry rollback", "allow_unsafe_model", "--allow-unsafe-model", "safe_mode=True",
                     "LRF_DASK_ADDRESS", "AWS_ENDPOINT_URL", "CAPABILITY_IAM"):
        assert expected in text, expected
