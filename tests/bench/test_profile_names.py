"""The search profile names lrflow's functions relative to the checkout, wherever the checkout is."""
import numpy as np

from bench.common import ROOT
from bench.harness import _profiled, _source_name


def test_files_in_the_checkout_and_in_site_packages_get_short_names():
    assert _source_name(f"{ROOT}/lrf_core/similarity.py") == "lrf_core/similarity.py"
    assert _source_name("/x/.venv/lib/python3.11/site-packages/numpy/linalg/_linalg.py") == "numpy/linalg/_linalg.py"
    assert _source_name("~") == "~"


def test_the_profile_lists_the_lrf_core_functions_it_ran():
    from lrf_core.memo import digest

    result, profile = _profiled(digest, np.arange(12.0))
    assert result == digest(np.arange(12.0))
    names = [r["function"] for r in profile["top_lrf_core_cumtime"]]
    assert any(n.startswith("lrf_core/memo.py:") and n.endswith("(digest)") for n in names), names
    assert profile["seconds"] >= 0 and profile["top_tottime"]
