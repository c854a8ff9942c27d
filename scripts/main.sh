#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job on the embedded
# default (PostgreSQL + pgvector and Redis under .rag/, no external servers needed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source scripts/env.sh

# Services, migrations and model files.
.venv/bin/rag setup
.venv/bin/rag doctor
