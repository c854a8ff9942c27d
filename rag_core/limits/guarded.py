"""The request limit and the token quota under the outage policy.

The Redis-backed limits (:mod:`rag_core.limits.rate`, :mod:`rag_core.limits.quota`) raise
``RateLimitBackendError`` when Redis fails; these wrappers hand that to the one outage policy
(:mod:`rag_core.common.outage`) and do what it decides, so the query service only ever sees
an admission, a reservation or a refusal with a typed code.

* :class:`GuardedRateLimiter` (``rate_limit``, default ``local_fallback``): while Redis is
  unreachable each process enforces the same sliding window in memory
  (:class:`~rag_core.limits.local_rate.LocalRateLimiter`), so an outage does not lift rate
  limits; its refusals are the usual ``rate_limited`` with a Retry-After.
* :class:`GuardedQuota` (``token_quota``, default fail open for
  ``token_quota_grace_s``): during the grace period a question is answered under a
  *provisional* reservation (an id Redis never saw); once it is over, reservations are
  refused with ``quota_unavailable``. A settle that fails returns a debt marker for the
  question's audit row, and when Redis answers again the debts of the tenants this process
  owes for are charged from the audit log (:mod:`rag_core.limits.settlement`). That runs
  inside the quota call that noticed Redis was back (a few milliseconds of one request), and
  is retried at most every ``_SETTLE_RETRY_S`` while some debt has not reached the audit log
  yet (still in flight, or spooled while the database is away).

Every refusal either wrapper hands the query service is counted in
``rag_limit_rejections_total{limit="rate"|"quota", reason=<error code>}``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg

from rag_core.common.metrics import LIMIT_REJECTIONS
from rag_core.common.outage import DEFAULT_OUTAGES, Control, Outages
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import OutageMode
from rag_core.db.pool import Database
from rag_core.errors import (
    ConfigurationError,
    DatabaseError,
    LimitError,
    QuotaUnavailableError,
    RateLimitBackendError,
    TokenQuotaExceededError,
)
from rag_core.limits.local_rate import LocalRateLimiter
from rag_core.limits.quota import Reservation, TokenQuota
from rag_core.limits.rate import Admission, RateLimiter
from rag_core.limits.settlement import SettlementReport, debt_marker, settle_tenant

__all__ = ["GuardedQuota", "GuardedRateLimiter"]

_log = logging.getLogger(__name__)

_SETTLE_RETRY_S = 30.0
_OWED_FOR_S = 2 * 86_400.0  # a debt older than the settlement window can no longer be charged


class GuardedRateLimiter:
    """:class:`RateLimiter` that follows the outage policy (``rate_limit``)."""

    def __init__(self, inner: RateLimiter, outages: Outages = DEFAULT_OUTAGES, *,
                 local: LocalRateLimiter | None = None) -> None:
        self.inner = inner
        self.outages = outages
        self.local = local or LocalRateLimiter(inner.policy_for, clock=outages.clock)

    def admit(self, tenant_id: str) -> Admission | None:
        """An admission (None: admitted without any limit, failing open), else
        ``RateLimitExceededError``, or (failing closed) ``RateLimitBackendError``."""
        try:
            return self._admit(tenant_id)
        except LimitError as exc:
            LIMIT_REJECTIONS.labels("rate", exc.code.value).inc()
            raise

    def _admit(self, tenant_id: str) -> Admission | None:
        try:
            admission = self.inner.admit(tenant_id)
        except RateLimitBackendError as exc:
            if not self.outages.handle(Control.RATE_LIMIT, "admit", exc):
                raise
            if self.outages.mode(Control.RATE_LIMIT) is OutageMode.LOCAL_FALLBACK:
                return self.local.admit(tenant_id)
            return None
        self.local.record(admission.tenant_id)
        self.outages.recovered(Control.RATE_LIMIT)
        return admission


class GuardedQuota:
    """:class:`TokenQuota` that follows the outage policy (``token_quota``) and settles the
    usage it let through without Redis (see the module docstring). Without ``db`` nothing is
    settled automatically (``settle_outage`` with an explicit settlement still works)."""

    def __init__(self, inner: TokenQuota, outages: Outages = DEFAULT_OUTAGES, *,
                 db: Database | None = None) -> None:
        self.inner = inner
        self.outages = outages
        self._db = db
        self._owed: dict[TenantId, dict[str, float]] = {}  # tenant -> reservation id -> when
        self._owed_lock = threading.Lock()
        self._settling = threading.Lock()
        self._last_attempt: float | None = None

    # -- the query path --
    def reserve(self, tenant_id: str, estimated_tokens: int) -> Reservation:
        """A reservation (provisional while Redis is down within the grace period), else
        ``TokenQuotaExceededError`` or ``QuotaUnavailableError``."""
        try:
            return self._reserve(tenant_id, estimated_tokens)
        except LimitError as exc:
            LIMIT_REJECTIONS.labels("quota", exc.code.value).inc()
            raise

    def _reserve(self, tenant_id: str, estimated_tokens: int) -> Reservation:
        tenant = parse_tenant_id(tenant_id)
        try:
            reservation = self.inner.reserve(tenant, estimated_tokens)
        except TokenQuotaExceededError:
            self._answered()  # a refusal is Redis answering too
            raise
        except RateLimitBackendError as exc:
            if not self.outages.handle(Control.TOKEN_QUOTA, "reserve", exc):
                # Failing closed from the start is a grace period of none.
                grace = self.outages.policy.token_quota_grace_s \
                    if self.outages.mode(Control.TOKEN_QUOTA) is OutageMode.FAIL_OPEN else 0.0
                raise QuotaUnavailableError(
                    tenant, self.outages.down_for(Control.TOKEN_QUOTA) or 0.0, grace) from exc
            # Redis's clock is out of reach: this host's UTC day names the quota day.
            return Reservation(tenant, secrets.token_hex(16),
                               datetime.now(UTC).strftime("%Y%m%d"), estimated_tokens)
        self._answered()
        return reservation

    def settle(self, reservation: Reservation, actual_tokens: int) -> str | None:
        """Charge ``actual_tokens``; None when done, else the debt marker for the question's
        audit row (Redis was down: the tokens are charged from the row later)."""
        try:
            self.inner.settle(reservation, actual_tokens)
        except RateLimitBackendError as exc:
            # Settling cannot be refused after the fact: counted, logged, owed.
            self.outages.handle(Control.TOKEN_QUOTA, "settle", exc)
            with self._owed_lock:
                self._owed.setdefault(reservation.tenant_id, {})[
                    reservation.reservation_id] = self.outages.clock()
            return debt_marker(reservation.day, reservation.reservation_id)
        self._answered()
        return None

    # -- settlement --
    def owed_tenants(self) -> list[TenantId]:
        """Tenants this process answered for without charging the quota, not settled yet."""
        with self._owed_lock:
            return sorted(self._owed)

    def settle_outage(self, tenants: Iterable[str] | None = None) -> SettlementReport:
        """Charge the debts of ``tenants`` (default: those this process owes for) now.

        Raises ``RateLimitBackendError`` while Redis is still down, ``ConfigurationError``
        without a database; safe to call any number of times (each debt is charged once).
        """
        if self._db is None:
            raise ConfigurationError("GuardedQuota", "db=None", "settlement reads the audit log")
        chosen = None if tenants is None else [parse_tenant_id(t) for t in tenants]
        with self._settling:
            return self._settle(self._db, chosen)

    def _settle(self, db: Database, tenants: list[TenantId] | None) -> SettlementReport:
        """Settle ``tenants`` (None: the owed ones); the caller holds ``_settling``."""
        self._last_attempt = self.outages.clock()
        results = []
        for tenant in self.owed_tenants() if tenants is None else tenants:
            result = settle_tenant(db, self.inner, tenant)
            self._forget(tenant, result.reservation_ids)
            results.append(result)
        return SettlementReport(tuple(results))

    def _forget(self, tenant: TenantId, found: frozenset[str]) -> None:
        """Drop the debts the audit log showed (charged now or before), and those too old
        to be charged at all."""
        oldest = self.outages.clock() - _OWED_FOR_S
        with self._owed_lock:
            owed = self._owed.get(tenant, {})
            for reservation_id in [r for r, when in owed.items() if r in found or when < oldest]:
                del owed[reservation_id]
            if not owed:
                self._owed.pop(tenant, None)

    def _answered(self) -> None:
        """Redis answered: end the outage and settle what this process owes, now that it
        can (or again after a while, for debts whose audit row was not written yet)."""
        ended = self.outages.recovered(Control.TOKEN_QUOTA) is not None
        db = self._db
        if db is None or not self._owed:
            return
        last = self._last_attempt
        if not ended and last is not None and self.outages.clock() - last < _SETTLE_RETRY_S:
            return
        if not self._settling.acquire(blocking=False):
            return  # another thread is settling already
        try:
            self._settle(db, None)
        except (RateLimitBackendError, DatabaseError, psycopg.Error) as exc:
            # The debts stay in the audit log; the next attempt charges them.
            _log.warning("settling the token quota after a Redis outage failed: %s", exc)
        finally:
            self._settling.release()
