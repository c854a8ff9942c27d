"""The steps of ``rag rollback``, each idempotent: run again, it finds nothing to do and
says ``unchanged``.

* :func:`turn_flags_off`: every named flag to ``rolled_back`` at 0 % (which reaches nobody,
  ``force_on`` tenants included). All names are looked up before the first move, so a
  mistyped name changes nothing. The flag store's move is a no-op (no event) for a flag
  already there. Run after an earlier ``--to-migration`` below 0012, the flag table has its
  0001 shape (``enabled``, ``rollout_percent``): the flag is switched off in that shape,
  with an event in that shape; below 0001 there is no flag left to reach anyone.
* :func:`downgrade_schema`: the migrations above the target rolled back, newest first
  (:func:`rag_core.db.migrations.downgrade`); at or below the target already, nothing.
* :func:`clear_answer_cache`: SCAN + UNLINK of this product's answer-cache keys only
  (``<prefix>:tn_…:answer:…``, every tenant or one), in the caches' database only. Never
  FLUSHDB: the caches' Redis may be shared with other products (their prefixes) and the
  query-embedding cache (keyed by model version, still valid) stays. Each name SCAN returns
  is checked against the exact key shape before it is deleted: a glob is looser than it
  looks (``*`` crosses ``:``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
import redis

from rag_core.common.tenancy import TENANT_ID_BODY, TenantId
from rag_core.db import migrations
from rag_core.db.feature_flags import FlagStore
from rag_core.errors import CacheUnavailableError, UnknownFlagError

__all__ = ["AdminConnector", "StepResult", "answer_key_shape", "clear_answer_cache",
           "downgrade_schema", "turn_flags_off"]

Connection = psycopg.Connection[tuple[Any, ...]]
AdminConnector = Callable[[], AbstractContextManager[Connection]]
StepStatus = Literal["changed", "unchanged", "failed"]

_SCAN_COUNT = 1000
_UNLINK_BATCH = 500

# Which shape rag.feature_flags has: none (below 0001), 0001's, or 0012's (with `state`).
_FLAG_SCHEMA = ("SELECT to_regclass('rag.feature_flags') IS NOT NULL, EXISTS (SELECT 1 "
                "FROM pg_attribute WHERE attrelid = to_regclass('rag.feature_flags') "
                "AND attname = 'state' AND NOT attisdropped)")
_LEGACY_LOCK = ("SELECT flag_key, enabled, rollout_percent FROM rag.feature_flags "
                "WHERE flag_key = ANY(%s) FOR UPDATE")
_LEGACY_OFF = ("UPDATE rag.feature_flags SET enabled = false, rollout_percent = 0, "
               "updated_at = now() WHERE flag_key = %s")
_LEGACY_EVENT = ("INSERT INTO rag.feature_flag_events (flag_key, rollout_percent, enabled, "
                 "reason) VALUES (%s, 0, false, %s)")


@dataclass(frozen=True)
class StepResult:
    """What one step did: ``changed`` or ``unchanged`` (``failed``: the error's message)."""

    step: str
    status: StepStatus
    detail: str
    counts: Mapping[str, int] = field(default_factory=dict)
    items: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "detail": self.detail,
                "counts": dict(self.counts), "items": [dict(i) for i in self.items]}


def _status(changed: int) -> StepStatus:
    return "changed" if changed else "unchanged"


# --- flags ----------------------------------------------------------------------------------
def turn_flags_off(flags: FlagStore, admin: AdminConnector, names: Sequence[str], *,
                   actor: str, reason: str, run_id: str) -> StepResult:
    """Every flag of ``names`` rolled back to 0 % (:class:`UnknownFlagError` for a name that
    does not exist, before anything moves)."""
    names = list(dict.fromkeys(names))
    with admin() as conn:
        row = conn.execute(_FLAG_SCHEMA).fetchone()
    has_table, has_state = (bool(row[0]), bool(row[1])) if row else (False, False)
    if not has_table:
        return StepResult("flags", "unchanged", "no feature flags at this schema version "
                          "(rag.feature_flags does not exist): none can reach a tenant",
                          {"flags": len(names), "turned_off": 0, "already_off": len(names)},
                          tuple({"name": n, "changed": False} for n in names))
    if not has_state:
        return _legacy_flags_off(admin, names, actor=actor, reason=reason, run_id=run_id)
    before = {name: flags.get(name) for name in names}
    items: list[dict[str, Any]] = []
    for name in names:
        old = before[name]
        new = flags.transition(name, state="rolled_back", percent=0, action="rollback",
                               actor=actor, reason=reason,
                               details={"run_id": run_id, "command": "rag rollback"})
        items.append({"name": name, "state_before": old.state, "percent_before": old.percent,
                      "state": new.state, "percent": new.percent,
                      "changed": (old.state, old.percent) != ("rolled_back", 0)})
    turned = sum(1 for i in items if i["changed"])
    detail = (f"{turned} of {len(names)} flags rolled back to 0 % "
              f"({', '.join(i['name'] for i in items if i['changed']) or 'all already were'})")
    return StepResult("flags", _status(turned), detail,
                      {"flags": len(names), "turned_off": turned,
                       "already_off": len(names) - turned}, tuple(items))


def _legacy_flags_off(admin: AdminConnector, names: list[str], *, actor: str, reason: str,
                      run_id: str) -> StepResult:
    """The same move on the 0001 table: ``enabled`` false, 0 %, one event per change."""
    note = f"{reason} (rag rollback {run_id} by {actor})"[:2000]
    items: list[dict[str, Any]] = []
    with admin() as conn, conn.transaction():
        found = {str(r[0]): (bool(r[1]), int(r[2]))
                 for r in conn.execute(_LEGACY_LOCK, [names]).fetchall()}
        missing = [n for n in names if n not in found]
        if missing:
            raise UnknownFlagError(missing[0])
        for name in names:
            enabled, percent = found[name]
            changed = enabled or percent != 0
            if changed:
                conn.execute(_LEGACY_OFF, [name])
                conn.execute(_LEGACY_EVENT, [name, note])
            items.append({"name": name, "enabled_before": enabled, "percent_before": percent,
                          "enabled": False, "percent": 0, "changed": changed})
    turned = sum(1 for i in items if i["changed"])
    return StepResult("flags", _status(turned),
                      f"{turned} of {len(names)} flags switched off (the flag table is at "
                      "its pre-0012 shape: enabled false, 0 %)",
                      {"flags": len(names), "turned_off": turned,
                       "already_off": len(names) - turned}, tuple(items))


# --- migrations -----------------------------------------------------------------------------
def downgrade_schema(admin: AdminConnector, directory: Path, target: int) -> StepResult:
    """Every applied migration above ``target`` rolled back, newest first."""
    with admin() as conn:
        states = migrations.status(conn, directory)
        applied = [s.version for s in states if s.applied]
        current = max(applied, default=0)
        rolled = migrations.downgrade(conn, directory, target) if current > target else []
    after = max((v for v in applied if v not in rolled), default=0)
    names = {s.version: s.name for s in states}
    counts = {"from_version": current, "to_version": after, "rolled_back": len(rolled)}
    if not rolled:
        return StepResult("migrations", "unchanged",
                          f"schema at version {current:04d}, not above {target:04d}", counts)
    return StepResult("migrations", "changed",
                      f"rolled back {', '.join(f'{v:04d}' for v in rolled)}: schema from "
                      f"version {current:04d} to {after:04d}", counts,
                      tuple({"version": v, "name": names.get(v, "")} for v in rolled))


# --- the answer cache -----------------------------------------------------------------------
def answer_key_shape(prefix: str, tenant: TenantId | None = None) -> re.Pattern[str]:
    """What an answer-cache key of ``prefix`` (and ``tenant``) starts with, exactly (the
    keys :class:`rag_core.query.answer_cache.AnswerKey` writes; a test keeps them equal)."""
    who = re.escape(tenant) if tenant is not None else TENANT_ID_BODY
    return re.compile(rf"{re.escape(prefix)}:{who}:answer:")


def clear_answer_cache(client: redis.Redis, prefix: str,
                       tenant: TenantId | None = None) -> StepResult:
    """Delete the answer-cache keys of ``tenant`` (every tenant when None) under ``prefix``
    in ``client``'s database; a Redis failure is a :class:`CacheUnavailableError`."""
    # The prefix is [A-Za-z0-9_.-] (a setting's pattern) and a tenant id is tn_<hex>:
    # neither holds a glob character, so both go into the pattern as they are.
    pattern = f"{prefix}:{tenant or 'tn_*'}:answer:*"
    shape = answer_key_shape(prefix, tenant)
    deleted = ignored = 0
    batch: list[bytes | str] = []
    try:
        for name in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            if shape.match(text) is None:
                ignored += 1
                continue
            batch.append(name)
            if len(batch) >= _UNLINK_BATCH:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
    except redis.RedisError as exc:
        raise CacheUnavailableError("the answer-cache clear", f"{type(exc).__name__}: {exc}",
                                    done=deleted) from exc
    scope = f"tenant {tenant}" if tenant is not None else "every tenant"
    return StepResult("answer_cache", _status(deleted),
                      f"{deleted} answer-cache keys deleted ({scope}, prefix {prefix!r})",
                      {"deleted": deleted, "ignored": ignored},
                      ({"prefix": prefix, "tenant": tenant},))
