"""The search's per-layer fitting on a Dask cluster (``lrf flow run CONFIG --dask ADDRESS``).

:func:`layer_map_on` connects to a scheduler and yields a ``layer_map`` for
:func:`lrf_core.search.compress.search`: every layer's candidate grid (and every chosen
layer's final refit) becomes one Dask task; results come back in layer order, so the
decisions equal the local runner's (methods and ranks exactly; factor weights to BLAS
round-off, since a worker may use another number of threads). Latency timing and the
similarity scores stay in the flow's process (see :mod:`lrf_core.search.jobs`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Optional

from lrf_core.errors import LRFError
from lrf_core.search.jobs import LayerMap, local_map

__all__ = ["DaskUnavailableError", "layer_map_on"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the scheduler before saying it is not there.
CONNECT_TIMEOUT_S = 20


class DaskUnavailableError(LRFError, ConnectionError):
    """The Dask scheduler named by ``--dask`` / ``LRF_DASK_ADDRESS`` cannot be reached."""


@contextmanager
def layer_map_on(address: Optional[str]) -> Iterator[LayerMap]:
    """A ``layer_map`` running the jobs on the cluster at ``address`` (``local_map`` when None).

    The client lives as long as the ``with`` block: the search consumes the results inside it.
    """
    if not address:
        yield local_map
        return
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise DaskUnavailableError(
            f"Cannot reach the Dask scheduler at {address!r} ({type(error).__name__}: {error}). Start one "
            "(`dask scheduler` and `dask worker ADDRESS`, or infra/compose), or leave --dask / LRF_DASK_ADDRESS unset "
            "to fit in this process."
        ) from error
    with client:
        workers = len(client.scheduler_info().get("workers", {}))
        logger.info("fitting the layers on %s (%d workers)", address, workers)

        def dask_map(fn, jobs):
            # pure=False: a content key would hash every kernel and Σ (tens of MB) for jobs never repeated
            futures = client.map(fn, list(jobs), pure=False)
            try:
                for future in futures:  # in layer order, each as soon as it and those before it are done
                    yield future.result()
            finally:
                client.cancel(futures)

        yield dask_map
