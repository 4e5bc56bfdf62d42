"""lrflow benchmarks (issue 5): a Fashion-MNIST model zoo compressed side by side with baselines.

Run from the repository root as modules, e.g. ``python -m bench.run --quick``; see
``bench/README.md`` for the pieces. Nothing here is imported by ``lrf_core``, ``tasks`` or ``flows``.
"""
