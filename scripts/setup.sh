#!/usr/bin/env bash
# Create .venv and install the project with its dev tools. Idempotent; safe to re-run.
# torch is installed first, pinned to the CPU build (constraints.txt): a resolver left to
# itself pulls a multi-GB CUDA build. uv does the rest quickly; plain pip is the fallback.
# Extras: dev (lint, types, tests) and bench (what `rag bench` / `rag eval` need).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
    echo "setup: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
    echo "setup: installing torch==2.13.0 (CPU build)"
    .venv/bin/python -m pip install --quiet torch==2.13.0
fi
if ! .venv/bin/python -m uv --version >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet uv
fi
echo "setup: installing the project and its dependencies"
if ! .venv/bin/python -m uv pip install --quiet --python .venv/bin/python \
        --constraint constraints.txt -e ".[dev,bench]"; then
    echo "setup: uv failed, falling back to pip" >&2
    .venv/bin/python -m pip install --quiet --constraint constraints.txt -e ".[dev,bench]"
fi
.venv/bin/python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0") and torch.version.cuda is None, torch.__version__
PY
