"""Render ``REPORT.md`` and its PNG plots from the result files alone (issue 5).

``python -m bench.report [--results DIR] [--out REPORT.md]`` reads ``DIR/zoo.json``,
``DIR/compare_*.json``, ``DIR/depth_sweep.json``, ``DIR/scale_resnet50.json`` and
``DIR/dask_search.json`` (any may be missing), and writes the report with its figures in ``<out dir>/figures[-MODE]/``:

* ``pareto_<model>.png``: test accuracy against MACs kept, every variant, before (hollow) and
  after (filled) its fine-tune, the parent and the 1-point gate, the front of final points;
* ``latency.png``: measured speedup against the MACs ratio (TF batch 1, TF batch 64, TFLite
  batch 1), with the ``speedup = MACs ratio`` and ``0.8 ×`` lines;
* ``depth.png``: search time per phase against the number of eligible layers.

Every goal of the issue is stated as met or not met with its figure, and where one is missed
the report names the phase or layer type responsible (from the per-phase timings, the cProfile
of the default search, the per-layer block timings and the remaining cost per layer type).
"""
