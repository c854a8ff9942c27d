#!/usr/bin/env bash
# The README's second command (and CI's): set up if needed, then lint, type-check, check the
# import contracts and the declared dependencies, and run the whole test suite against real
# embedded PostgreSQL and Redis that the suite starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/system-packages.sh
bash scripts/setup.sh
source scripts/env.sh

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== import contracts (import-linter)"
.venv/bin/lint-imports
echo "== declared vs used dependencies (deptry)"
.venv/bin/deptry .
echo "== pytest"
# The suite starts its own servers under .rag/test; stop them when the run is over.
trap 'RAG_STATE_DIR=.rag/test .venv/bin/rag services stop >/dev/null 2>&1 || true' EXIT
status=0
# --durations: every run's log ends with its slowest tests (where to look when the suite grows)
.venv/bin/pytest -p no:cacheprovider --durations=40 "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
