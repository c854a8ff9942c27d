"""Prefect 3 flows: thin orchestration over rag_core (ingestion, benchmarks, batch queries,
rollout checks). Deployments are declared in prefect.yaml at the repository root."""
