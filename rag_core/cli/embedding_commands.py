"""``rag embeddings reembed|drop``: embedding model versions side by side, per tenant.

``reembed`` writes a tenant's stored chunks' vectors under a new model key with a backend
(registering the key if needed), beside the vectors the tenant is served from; resumable,
a rerun embeds only what is missing (:mod:`rag_core.ingestion.reembed`). A feature flag
then routes a canary cohort's retrieval to the key (``rag rollout create NAME --variant
embedding_model_key=KEY``; every query process needs ``RAG_EMBEDDING_VARIANTS`` naming the
key's backend). ``drop`` deletes a key's vectors once no question searches it: a rolled-back
candidate's, or the old default's once the rollout is complete at 100 %
(:func:`~rag_core.ingestion.model_keys.check_droppable`). Destructive and shared, so it asks
first (``--yes`` where nobody can answer).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rag_core.cli._output import console, emit_json, fail_cleanly
from rag_core.cli.ingest_commands import require_tenant
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.composition import Platform
from rag_core.config import get_settings
from rag_core.embeddings.registry import BACKENDS, load_embedder
from rag_core.errors import ConfigurationError, ConfirmationRequiredError
from rag_core.ingestion.model_keys import (
    check_droppable,
    checked_key,
    drop_vectors,
    embedder_label,
    missing_by_tenant,
    tenants_with_vectors,
)
from rag_core.ingestion.reembed import Reembedding, ReembedPolicy
from rag_core.retrieval.vector_store import VectorStore

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]
Tenants = Annotated[list[str] | None, typer.Option(
    "--tenant", help="a tenant id (repeatable)")]
ModelKey = Annotated[str, typer.Option("--model-key", help="the embedding model key")]

embeddings_app = typer.Typer(help="Embedding model versions: re-embed beside, drop after.",
                             no_args_is_help=True)


@embeddings_app.command("reembed")
@fail_cleanly
def reembed(
    model_key: ModelKey,
    backend: Annotated[str, typer.Option("--backend", help=f"one of {', '.join(BACKENDS)}")],
    tenants: Tenants = None,
    all_tenants: Annotated[bool, typer.Option(
        "--all-tenants", help="every tenant with chunks missing the key's vector")] = False,
    batch_chunks: Annotated[int, typer.Option(min=1, max=10_000,
                                              help="chunks per transaction")] = 64,
    as_json: JsonFlag = False,
) -> None:
    """Embed tenants' chunks under a new model key, beside the vectors they are served from.

    No re-chunking; a rerun embeds only what is missing (resumable)."""
    if backend not in BACKENDS:
        raise ConfigurationError("--backend", backend, f"one of {', '.join(BACKENDS)}")
    _one_choice(tenants, all_tenants)
    key = checked_key(model_key)
    settings = get_settings()
    with Platform(settings) as platform:
        chosen: list[TenantId]
        if all_tenants:  # every rollout stage may reach any of them: all need the vectors
            with platform.admin_connection() as conn:
                chosen = [t for t, n in missing_by_tenant(conn, key).items() if n]
        else:
            chosen = [parse_tenant_id(t) for t in tenants or ()]
            for tenant in chosen:
                require_tenant(platform.database, tenant)
        embedder = load_embedder(backend, state_dir=settings.state_dir)
        job = Reembedding(platform.database, platform.admin_connection,
                          VectorStore(platform.database, settings, model_key=key), embedder,
                          ReembedPolicy(batch_chunks=batch_chunks,
                                        embed_batch_size=settings.embed_batch_size))
        reports = [job.run(tenant) for tenant in chosen]
    for report in reports:
        console.print(f"{report.tenant_id}: {report.embedded} embedded now, "
                      f"{report.already_present} already there, {report.missing} missing, "
                      f"of {report.chunks} chunks under {key} ({report.model}) in "
                      f"{report.elapsed_s:.1f}s", highlight=False)
    if as_json:
        emit_json({"model_key": key, "backend": backend,
                   "model": embedder_label(embedder),
                   "embedded": sum(r.embedded for r in reports),
                   "missing": sum(r.missing for r in reports),
                   "tenants": [r.as_dict() for r in reports]})


@embeddings_app.command("drop")
@fail_cleanly
def drop(
    model_key: ModelKey,
    tenants: Tenants = None,
    all_tenants: Annotated[bool, typer.Option(
        "--all-tenants", help="every tenant holding vectors under the key")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete a model key's vectors (per tenant or all) once no question searches them.

    Chunks, documents and other keys' vectors stay."""
    _one_choice(tenants, all_tenants)
    key = checked_key(model_key)
    settings = get_settings()
    with Platform(settings) as platform:
        check_droppable(key, default_key=settings.embedding_model_key,
                        flags=platform.flags.all())
        chosen: list[TenantId]
        if all_tenants:
            with platform.admin_connection() as conn:
                chosen = tenants_with_vectors(conn, key)
        else:
            chosen = [parse_tenant_id(t) for t in tenants or ()]
        _confirm(key, chosen, yes=yes)
        dropped = {tenant: drop_vectors(platform.database, tenant, key) for tenant in chosen}
    console.print(f"dropped {sum(dropped.values())} vectors under {key} of "
                  f"{len(dropped)} tenant(s)", highlight=False)
    if as_json:
        emit_json({"model_key": key, "dropped": sum(dropped.values()),
                   "tenants": [{"tenant_id": t, "dropped": n} for t, n in dropped.items()]})


def _one_choice(tenants: list[str] | None, all_tenants: bool) -> None:
    if bool(tenants) == all_tenants:
        raise ConfigurationError("--tenant/--all-tenants", tenants or None,
                                 "give either --tenant (repeatable) or --all-tenants")


def _confirm(key: str, tenants: list[TenantId], *, yes: bool) -> None:
    if yes or not tenants:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise ConfirmationRequiredError("rag embeddings drop", "standard input is not a "
                                        "terminal, so nobody can confirm it: give --yes")
    if not typer.confirm(f"Delete the vectors under {key} of {len(tenants)} tenant(s)?",
                         default=False):
        raise ConfirmationRequiredError("rag embeddings drop", "not confirmed at the prompt")


def register(app: typer.Typer) -> None:
    app.add_typer(embeddings_app, name="embeddings")
