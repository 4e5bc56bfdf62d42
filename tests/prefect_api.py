"""Prefect runs for the tests (a pytest plugin): one temporary Prefect API per session, results kept in tmp."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect API (``prefect_test_harness``) with its home and result storage in tmp."""
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_HOME", str(home))
        patch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(home / "storage"))
        from prefect.testing.utilities import prefect_test_harness

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        with prefect_test_harness(server_startup_timeout=120):
            yield home
