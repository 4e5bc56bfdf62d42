"""A full results directory without a depth sweep or Dask result shows the quick run's, labelled."""
import json

from bench.report.load import load_results
from bench.report.render import fallback_line


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_missing_parts_come_from_the_fallback_and_say_so(tmp_path):
    full, quick = tmp_path / "full", tmp_path / "quick"
    _write(quick / "depth_sweep.json", {"mode": "quick", "rows": [1]})
    _write(quick / "dask_search.json", {"mode": "quick", "runs": {}})
    _write(quick / "scale_resnet50.json", {"mode": "quick"})  # not a fallback part: never borrowed
    _write(full / "dask_search.json", {"mode": "full", "runs": {}})
    results = load_results(full, fallback=quick)
    assert results["depth"]["rows"] == [1] and results["depth"]["_from"].endswith("quick/depth_sweep.json")
    assert results["dask"] == {"mode": "full", "runs": {}}  # the full run's own result wins
    assert results["scale"] is None
    assert "From the quick run" in fallback_line(results["depth"])[0]
    assert fallback_line(results["dask"]) == []
    assert load_results(full)["depth"] is None  # no fallback given: nothing borrowed
