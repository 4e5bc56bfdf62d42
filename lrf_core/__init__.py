"""lrf_core: the numerical heart of lrflow (pure library: no Prefect, no S3, no global state).

See ../shared/METHODS.md for the methods; this package re-exports the public names only.
"""

__version__ = "0.1.0"
