"""lrflow's Prefect flows, deployments and the `lrf` command line (I/O around :mod:`tasks` and :mod:`lrf_core`)."""

import os

# A run without PREFECT_API_URL starts Prefect's ephemeral API, which gets 20 s to come up by default. On a
# busy 2-core host (a training beside it) `lrf flow run` died with "Timed out while attempting to connect to
# ephemeral Prefect API server"; 120 s is what the test harness already allows. A user's own setting wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
