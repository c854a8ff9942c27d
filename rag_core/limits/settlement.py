"""Settlement: charging the token quota, from the audit log, for tokens spent while Redis
was away.

While Redis cannot be reached the token quota fails open for a grace period
(:mod:`rag_core.limits.guarded`): questions are answered under a *provisional* reservation
that Redis never saw, and a settle that fails leaves the tokens of a real reservation
uncharged. In both cases the question's audit row carries a **debt**, ``quota_debt =
'<day>:<reservation id>'`` (migration 0008): the quota day the tokens belong to and the id
under which they are to be charged. The row's ``prompt_tokens + completion_tokens`` are the
amount. When Redis answers again, :func:`settle_tenant` reads the tenant's recent debts and
charges them with :meth:`TokenQuota.charge <rag_core.limits.quota.TokenQuota.charge>`.

**Why idempotent.** The marker is in Redis, not in PostgreSQL: the charge script checks
the day's *settled* hash (the same one ``settle`` writes) for the reservation id, and adds the
tokens and the id in one atomic script call. So

* a crash mid-settlement leaves each script call all or nothing, and re-running it charges
  only what was not charged yet (running it twice changes nothing);
* a settle that really reached Redis but whose reply was lost (so the row got a debt) and
  the later charge of that debt count once, because both use the reservation id;
* the audit log stays append-only for the application role: no "settled" flag to update, and
  a row spooled during a database outage keeps its debt until it is flushed and settled.

**Window.** Only debts of yesterday and today (by the Redis server's clock) are charged. The
quota of an older day is over, and its keys, the markers included, have expired (day keys
live until the end of the next day): charging it would re-create keys and could charge
twice. A Redis that comes back empty (the embedded one keeps nothing) has lost the day's
totals and markers too; settlement then charges the debts it can see, the only usage of the
day still known.

**Tenants.** A process settles the tenants it gave debts to (:mod:`rag_core.limits.guarded`);
``rag quota settle`` settles given tenants, or finds every tenant with debts through the
admin connection (which must bypass row-level security to see them all).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Database
from rag_core.errors import ConfigurationError
from rag_core.limits.quota import TokenQuota

__all__ = ["Debt", "SettlementReport", "TenantSettlement", "debt_marker", "debtor_tenants",
           "read_debts", "settle_tenant", "settle_tenants"]

_log = logging.getLogger(__name__)

_MARKER = re.compile(r"([0-9]{8}):([0-9a-f]{32})")  # the CHECK of migration 0008
_CHARGES_PER_CALL = 500  # one atomic script call per this many debts (keeps each call short)

_DEBTS = """
SELECT request_id::text, quota_debt, prompt_tokens + completion_tokens
  FROM rag.audit_log
 WHERE tenant_id = %s AND quota_debt IS NOT NULL AND occurred_at >= %s
 ORDER BY audit_id
"""
_DEBTORS = """
SELECT DISTINCT tenant_id::text FROM rag.audit_log
 WHERE quota_debt IS NOT NULL AND occurred_at >= %s
 ORDER BY 1
"""
_BYPASSES_RLS = """
SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user
"""


def debt_marker(day: str, reservation_id: str) -> str:
    """The ``quota_debt`` value of a row whose tokens are owed under ``reservation_id``."""
    return f"{day}:{reservation_id}"


@dataclass(frozen=True)
class Debt:
    """Tokens of one audited question that no quota counter recorded."""

    request_id: str
    day: str
    reservation_id: str
    tokens: int


@dataclass(frozen=True)
class TenantSettlement:
    """What settling one tenant found and charged (``charged`` <= ``debts``)."""

    tenant_id: TenantId
    debts: int
    charged: int
    tokens_charged: int
    skipped_old: int  # debts of days whose quota is over (see the module docstring)
    reservation_ids: frozenset[str] = frozenset()  # every debt found, charged now or before

    def as_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "debts": self.debts, "charged": self.charged,
                "tokens_charged": self.tokens_charged, "skipped_old": self.skipped_old}


@dataclass(frozen=True)
class SettlementReport:
    tenants: tuple[TenantSettlement, ...]

    @property
    def charged(self) -> int:
        return sum(t.charged for t in self.tenants)

    @property
    def tokens_charged(self) -> int:
        return sum(t.tokens_charged for t in self.tenants)

    def as_dict(self) -> dict[str, Any]:
        return {"tenants": [t.as_dict() for t in self.tenants],
                "debts": sum(t.debts for t in self.tenants), "charged": self.charged,
                "tokens_charged": self.tokens_charged}


def _window_start(now: datetime) -> tuple[str, datetime]:
    """Yesterday's day key, and the time from which rows may hold its debts (a day of slack
    for clocks of the hosts that wrote ``occurred_at``)."""
    midnight = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo)
    yesterday = midnight - timedelta(days=1)
    return yesterday.strftime("%Y%m%d"), yesterday - timedelta(days=1)


def read_debts(db: Database, tenant_id: str, since: datetime) -> list[Debt]:
    """The tenant's debts in audit rows since ``since`` (its own RLS-scoped session)."""
    tenant = parse_tenant_id(tenant_id)
    with db.tenant_session(tenant) as conn:
        rows = conn.execute(_DEBTS, [tenant, since]).fetchall()
    debts = []
    for request_id, marker, tokens in rows:
        match = _MARKER.fullmatch(str(marker))
        if match is None:  # the column's CHECK forbids it; never guess an amount or a day
            _log.error("audit row %s of tenant %s: unreadable quota debt %r; not charged",
                       request_id, tenant, marker)
            continue
        debts.append(Debt(str(request_id), match.group(1), match.group(2), int(tokens)))
    return debts


def settle_tenant(db: Database, quota: TokenQuota, tenant_id: str) -> TenantSettlement:
    """Charge the tenant's recent debts once each (see the module docstring).

    Raises ``RateLimitBackendError`` when Redis is still down (nothing is lost: the debts stay
    in the audit log for the next attempt).
    """
    tenant = parse_tenant_id(tenant_id)
    oldest_day, since = _window_start(quota.server_now(tenant))
    debts = read_debts(db, tenant, since)
    by_day: dict[str, list[tuple[str, int]]] = {}
    skipped = 0
    for debt in debts:
        if debt.day < oldest_day:
            skipped += 1
            continue
        by_day.setdefault(debt.day, []).append((debt.reservation_id, debt.tokens))
    charged = tokens = 0
    for day, charges in sorted(by_day.items()):
        for start in range(0, len(charges), _CHARGES_PER_CALL):
            applied, amount = quota.charge(tenant, day, charges[start:start + _CHARGES_PER_CALL])
            charged += applied
            tokens += amount
    if charged:
        _log.warning("tenant %s: charged %d tokens of %d questions answered while Redis was "
                     "away", tenant, tokens, charged)
    return TenantSettlement(tenant, len(debts), charged, tokens, skipped,
                            frozenset(d.reservation_id for d in debts))


def settle_tenants(db: Database, quota: TokenQuota,
                   tenants: Iterable[str]) -> SettlementReport:
    """:func:`settle_tenant` for each tenant, in order."""
    return SettlementReport(tuple(settle_tenant(db, quota, t) for t in tenants))


def debtor_tenants(conn: psycopg.Connection[tuple[Any, ...]], now: datetime) -> list[TenantId]:
    """Every tenant with debts in the settlement window, read with the admin connection.

    Row-level security is FORCEd on the audit log: a role that does not bypass it would see
    no tenant at all, which must not pass for "nothing to settle".
    """
    row = conn.execute(_BYPASSES_RLS).fetchone()
    if row is None or not row[0]:
        raise ConfigurationError("DATABASE_URL", "(the admin role)",
                                 "it does not bypass row-level security, so it cannot find "
                                 "the tenants to settle; name them with --tenant")
    _, since = _window_start(now)
    return [parse_tenant_id(str(t)) for (t,) in conn.execute(_DEBTORS, [since]).fetchall()]
