#!/usr/bin/env bash
# Start (up) or stop (down) the real services the test suite uses: PostgreSQL 15 and the dev
# Slurm cluster (munge, slurmctld, slurmd under .tp-cluster/). Prints the test database URL.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TP_VENV:-.venv}
PG_URL="postgresql://tp:tp@127.0.0.1:5432/tp_test"
case "${1:-up}" in
  up)
    # Only the URL goes to stdout (callers capture it): pg_ctlcluster, psql and the cluster speak
    # on stdout too ("Removed stale pid file." once broke CI's URL), so they write to stderr. The
    # daemons started here inherit that stderr, never the caller's pipe, which `$(...)` would
    # otherwise wait on for as long as they live.
    {
      if ! pg_lsclusters -h 2>/dev/null | awk '$1=="15" && $2=="main" {print $4}' | grep -q online; then
        [ -d /etc/postgresql/15/main ] || pg_createcluster 15 main
        pg_ctlcluster 15 main start
      fi
      for _ in $(seq 30); do runuser -u postgres -- pg_isready -q -h 127.0.0.1 && break; sleep 1; done
      runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname='tp'" | grep -q 1 ||
        runuser -u postgres -- psql -qc "CREATE ROLE tp LOGIN PASSWORD 'tp'"
      runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_database WHERE datname='tp_test'" | grep -q 1 ||
        runuser -u postgres -- psql -qc "CREATE DATABASE tp_test OWNER tp"
      "$VENV/bin/tp-sweep" cluster up --dir .tp-cluster
    } >&2
    echo "$PG_URL"
    ;;
  down)
    "$VENV/bin/tp-sweep" cluster down --dir .tp-cluster >&2 || true
    pg_ctlcluster 15 main stop 2>/dev/null || true
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
