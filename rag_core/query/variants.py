"""What a tenant's questions run with, once the feature flags have had their say.

The query path's three switchable settings (:class:`Variant`: the retrieval mode, the
answer prompt's version, the embedding model) start at the platform's defaults; every flag
that reaches the tenant (:meth:`~rag_core.db.flag_cohorts.Flag.reaches`) overrides the
ones its variant names, in flag-name order. A :class:`Route` is the result for one call:
the query configuration (with the prompt version, the embedding model's label and the
audit rows' ``rollout_cohort``), the retriever and the answerer to use. The retrievers and
answerers themselves are built and kept by the composition root (:class:`VariantRoutes`),
so a flag that switches a cohort to hybrid retrieval costs no object per question.

The flags come from :class:`~rag_core.db.feature_flags.CachedFlags` (at most one read per
``ttl_s``): resolving a route is a few HMACs, never a database round trip per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from rag_core.common.tenancy import TenantId
from rag_core.db.flag_cohorts import Flag, cohort_label
from rag_core.query.service_types import QueryConfig

__all__ = ["Route", "Variant", "VariantRoutes", "Variants"]


@dataclass(frozen=True)
class Variant:
    """The switchable settings of the query path."""

    retrieval_mode: str
    prompt_version: str
    embedding_model_key: str

    def overridden(self, overrides: dict[str, str]) -> Variant:
        known = {k: v for k, v in overrides.items() if k in _FIELDS}
        return replace(self, **known) if known else self


_FIELDS = frozenset(Variant.__dataclass_fields__)


class RetrieverLike(Protocol):
    def retrieve(self, tenant_id: TenantId | str, question: str, k: int | None = None) -> Any:
        ...


class VariantRoutes(Protocol):
    """The objects a variant runs with (built once per variant by the composition root)."""

    def retriever(self, variant: Variant) -> RetrieverLike: ...

    def answerer(self, variant: Variant) -> Any: ...

    def embedding_label(self, variant: Variant) -> str:
        """``model_id@version`` of the variant's embedder (in cache keys and audit rows)."""
        ...


@dataclass(frozen=True)
class Route:
    """One call's configuration, retriever and answerer."""

    config: QueryConfig
    retriever: RetrieverLike
    answerer: Any
    variant: Variant | None = None


class Variants:
    """Routes a tenant's call through the flags that reach it."""

    def __init__(self, flags: Callable[[], Sequence[Flag]], routes: VariantRoutes,
                 default: Variant) -> None:
        self._flags = flags
        self._routes = routes
        self.default = default

    def variant(self, tenant: TenantId, flags: Sequence[Flag] | None = None) -> Variant:
        """The tenant's variant under ``flags`` (default: the current ones)."""
        chosen = self.default
        for flag in sorted(self._flags() if flags is None else flags, key=lambda f: f.name):
            if flag.reaches(tenant):
                chosen = chosen.overridden(dict(flag.variant))
        return chosen

    def route(self, tenant: TenantId, base: QueryConfig) -> Route:
        flags = self._flags()
        variant = self.variant(tenant, flags)
        config = replace(base, prompt_version=variant.prompt_version,
                         retrieval_mode=variant.retrieval_mode,
                         embedding_model=self._routes.embedding_label(variant),
                         rollout_cohort=cohort_label(flags, tenant))
        return Route(config, self._routes.retriever(variant), self._routes.answerer(variant),
                     variant)
