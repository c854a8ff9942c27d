#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job on the embedded
# default (PostgreSQL + pgvector and Redis under .rag/, no external servers needed):
# ingest the SciFact demo corpus for a demo tenant (idempotent: a second run finds every
# document already stored and embeds nothing), answer a batch of claims, then build the
# analysts' marts and check them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source scripts/env.sh

DEMO_TENANT="${RAG_DEMO_TENANT:-tn_5c1fac70000000000000000000000001}"

echo "== services, migrations, model files"
.venv/bin/rag setup
.venv/bin/rag doctor

echo "== ingest the SciFact corpus (5,183 abstracts) for tenant $DEMO_TENANT"
.venv/bin/rag ingest data/scifact/corpus.jsonl.gz --tenant "$DEMO_TENANT" --create-tenant

echo "== answer a batch of SciFact claims (≤5 questions per LLM call; offline: the labelled"
echo "   extractive answerer unless GROQ_API_KEY is set)"
mkdir -p .rag/demo
.venv/bin/rag batch data/scifact/queries.jsonl --tenant "$DEMO_TENANT" --limit "${RAG_DEMO_QUESTIONS:-50}" \
    --out .rag/demo/answers.jsonl
echo "answers written to .rag/demo/answers.jsonl"

echo "== analytics: dbt build of the audit marts as the read-only analytics role, then the"
echo "   Great Expectations checkpoint on them (README: For analysts)"
.venv/bin/rag analytics run
echo "serve it over HTTP: .venv/bin/rag tenant key create $DEMO_TENANT --name demo, then"
echo "  .venv/bin/rag serve  (batch page: http://127.0.0.1:8000/ui/, API docs: /docs)"
