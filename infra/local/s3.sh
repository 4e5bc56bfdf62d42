#!/bin/sh
# The embedded default S3: a moto server on loopback (127.0.0.1), for running lrflow without AWS.
#
#   eval "$(infra/local/s3.sh start)"   # start (or reuse) it and export AWS_ENDPOINT_URL etc.
#   infra/local/s3.sh status            # exit 3 when not running
#   eval "$(infra/local/s3.sh env)"     # export the variables for the running server
#   infra/local/s3.sh stop
#
# Settings (environment): LRF_S3_PORT (default 5555; 0 = a free port), LRF_S3_STATE_DIR
# (default .lrflow/s3 in the repository), LRF_REGISTRY_BUCKET (created on start; default lrflow),
# PYTHON (default the repository's .venv). moto keeps buckets in memory: stop discards them.
set -eu

usage="usage: $0 start|stop|status|env [options of python -m tasks.local_s3]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
case "$1" in
    start|stop|status|env) ;;
    *) echo "$usage" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/../.." && pwd)
# Run from the repository root so the default state directory is the same whichever directory
# the script is called from (start in one place, stop in another).
cd "$root"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" -m tasks.local_s3 "$@"
