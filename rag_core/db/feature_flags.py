"""Feature flags in PostgreSQL (migration 0012): read by the application, changed by the
owner, every change an event with who, what and why.

Reads go through the application pool (``rag_app`` may SELECT ``rag.feature_flags``;
flags are global, not tenant rows) and, on the query path, through :class:`CachedFlags`:
one read per ``ttl_s`` per process, so a flag lookup is not a database round trip per
request, and a change reaches every process within ``ttl_s``. When the database cannot be
read, the last flags read stay in force (a query path that is up keeps its variants; one
that never read them runs the defaults, which is what every flag's control cohort runs).

Changes run on the admin connection (``rag rollout``, the rollout flow, ``rag rollback``:
refused in a ``RAG_RUNTIME_ONLY`` process), one transaction each: the flag row is locked,
the transition checked against the state it was read in (two rollouts moving one flag
cannot interleave), the row updated and the event appended.
"""

from __future__ import annotations

import builtins
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from rag_core.common.tenancy import is_valid_tenant_id
from rag_core.db.flag_cohorts import (
    FLAG_NAME_REGEX,
    FLAG_STATES,
    LIVE_STATES,
    VARIANT_KEYS,
    Flag,
    FlagState,
)
from rag_core.db.pool import Database
from rag_core.errors import (
    ConfigurationError,
    FlagStateError,
    InvalidFlagError,
    UnknownFlagError,
)

__all__ = ["CachedFlags", "FlagEvent", "FlagStore", "checked_stages"]

Connection = psycopg.Connection[tuple[Any, ...]]
AdminConnector = Callable[[], AbstractContextManager[Connection]]

_log = logging.getLogger(__name__)

_COLUMNS = ("flag_key, state, rollout_percent, stages, variant, cohort_salt, force_on, "
            "force_off, description, updated_at")
# Composed from constants only (no caller's value is ever formatted in): S608 does not apply.
_SELECT_ALL = f"SELECT {_COLUMNS} FROM rag.feature_flags ORDER BY flag_key"  # noqa: S608
_SELECT_ONE = f"SELECT {_COLUMNS} FROM rag.feature_flags WHERE flag_key = %s"  # noqa: S608
_LOCK_ONE = _SELECT_ONE + " FOR UPDATE"
_INSERT = ("INSERT INTO rag.feature_flags (flag_key, description, stages, variant, "  # noqa: S608
           "force_on, force_off) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (flag_key) "
           f"DO NOTHING RETURNING {_COLUMNS}")
_UPDATE = ("UPDATE rag.feature_flags SET state = %s, rollout_percent = %s, "  # noqa: S608
           "enabled = %s, force_on = %s, force_off = %s, updated_at = now() "
           f"WHERE flag_key = %s RETURNING {_COLUMNS}")
_EVENT = ("INSERT INTO rag.feature_flag_events (flag_key, rollout_percent, enabled, reason, "
          "action, state, actor, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
_HISTORY = ("SELECT event_id, occurred_at, action, state, rollout_percent, actor, reason, "
            "details FROM rag.feature_flag_events WHERE flag_key = %s "
            "ORDER BY event_id DESC LIMIT %s")
_MAX_TENANT_LIST = 1000


@dataclass(frozen=True)
class FlagEvent:
    """One line of a flag's history."""

    event_id: int
    occurred_at: datetime
    action: str
    state: str | None
    percent: int
    actor: str
    reason: str
    details: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "occurred_at": self.occurred_at.isoformat(),
                "action": self.action, "state": self.state, "percent": self.percent,
                "actor": self.actor, "reason": self.reason, "details": dict(self.details)}


def _flag(row: Sequence[Any]) -> Flag:
    (name, state, percent, stages, variant, salt, force_on, force_off, description,
     updated_at) = row
    return Flag(name=str(name), state=state, percent=int(percent),
                stages=tuple(int(s) for s in stages), variant=dict(variant), salt=str(salt),
                force_on=frozenset(force_on), force_off=frozenset(force_off),
                description=str(description), updated_at=updated_at)


def checked_stages(stages: Iterable[int]) -> tuple[int, ...]:
    """Stages as the table wants them: strictly increasing percentages in 1..100 ending at
    100 (raises :class:`InvalidFlagError` naming the stages otherwise)."""
    values = tuple(stages)
    if not values or len(values) > 20 or values[-1] != 100 \
            or any(not 0 < s <= 100 for s in values) \
            or any(a >= b for a, b in itertools.pairwise(values)):
        raise InvalidFlagError("stages", list(values),
                               "1 to 20 increasing percentages in 1..100 ending at 100")
    return values


def _checked_tenants(field: str, tenants: Collection[str]) -> list[str]:
    bad = [t for t in tenants if not is_valid_tenant_id(t)]
    if bad or len(tenants) > _MAX_TENANT_LIST:
        raise InvalidFlagError(field, bad[:3] or len(tenants),
                               f"at most {_MAX_TENANT_LIST} tenant ids like tn_<32 hex>")
    return sorted(set(tenants))


class FlagStore:
    """Flags read as the application (``database``: the pool, or a callable giving it) and
    changed as the admin (``admin``). ``allowed_values`` completes :data:`VARIANT_KEYS` with
    what this installation knows (prompt versions, registered embedding models)."""

    def __init__(self, database: Database | Callable[[], Database], *, admin: AdminConnector,
                 allowed_values: Callable[[str], Collection[str]] | None = None) -> None:
        self._database = database
        self._admin = admin
        self._allowed_values = allowed_values

    # --- reads -----------------------------------------------------------------------------
    def all(self) -> list[Flag]:
        """Every flag, by name (application role)."""
        database = self._database if isinstance(self._database, Database) else self._database()
        with database.unscoped_session() as conn:
            return [_flag(row) for row in conn.execute(_SELECT_ALL).fetchall()]

    def get(self, name: str) -> Flag:
        with self._admin() as conn:
            row = conn.execute(_SELECT_ONE, [name]).fetchone()
        if row is None:
            raise UnknownFlagError(name)
        return _flag(row)

    def history(self, name: str, limit: int = 100) -> builtins.list[FlagEvent]:
        """The flag's latest ``limit`` events, newest first."""
        self.get(name)
        with self._admin() as conn:
            rows = conn.execute(_HISTORY, [name, limit]).fetchall()
        return [FlagEvent(int(r[0]), r[1], str(r[2]), r[3], int(r[4]), str(r[5]), str(r[6]),
                          dict(r[7])) for r in rows]

    # --- changes (admin, one transaction each) --------------------------------------------
    def create(self, name: str, variant: Mapping[str, str], *, description: str = "",
               stages: Iterable[int] = (5, 25, 50, 100), force_on: Collection[str] = (),
               force_off: Collection[str] = (), actor: str = "rag",
               reason: str = "created") -> Flag:
        """A new flag in state ``off`` (raises :class:`InvalidFlagError` if ``name`` exists
        with another definition; the same definition again returns the existing flag)."""
        if not re.match(FLAG_NAME_REGEX, name):
            raise InvalidFlagError("name", name, "lower-case letters, digits, '_', '.', '-', "
                                                 "at most 63 characters")
        variant = self._checked_variant(variant)
        stage_list = list(checked_stages(stages))
        on, off = _checked_tenants("force_on", force_on), _checked_tenants("force_off",
                                                                           force_off)
        with self._admin() as conn, conn.transaction():
            row = conn.execute(_INSERT, [name, description, stage_list, Jsonb(variant),
                                         on, off]).fetchone()
            if row is None:
                existing = _flag(conn.execute(_SELECT_ONE, [name]).fetchone() or ())
                if dict(existing.variant) != variant or list(existing.stages) != stage_list:
                    raise InvalidFlagError("name", name, "a flag of that name exists with "
                                           "another variant or stages")
                return existing
            flag = _flag(row)
            _append_event(conn, flag, "create", actor, reason, {"variant": variant})
        return flag

    def transition(self, name: str, *, state: FlagState, percent: int, action: str,
                   actor: str, reason: str, details: Mapping[str, Any] | None = None,
                   from_states: Collection[str] | None = None,
                   force_on: Collection[str] | None = None,
                   force_off: Collection[str] | None = None) -> Flag:
        """Move ``name`` to ``state`` at ``percent`` and record it. ``from_states`` are the
        states the move is allowed from (:class:`FlagStateError` otherwise): checked under
        the row's lock. A move that changes nothing records nothing and returns the flag."""
        if state not in FLAG_STATES or not 0 <= percent <= 100:
            raise InvalidFlagError("state", f"{state}@{percent}", "a flag state and 0..100")
        with self._admin() as conn, conn.transaction():
            row = conn.execute(_LOCK_ONE, [name]).fetchone()
            if row is None:
                raise UnknownFlagError(name)
            flag = _flag(row)
            if from_states is not None and flag.state not in from_states:
                raise FlagStateError(name, flag.state, action, sorted(from_states))
            on = sorted(flag.force_on) if force_on is None else \
                _checked_tenants("force_on", force_on)
            off = sorted(flag.force_off) if force_off is None else \
                _checked_tenants("force_off", force_off)
            if (flag.state, flag.percent, sorted(flag.force_on), sorted(flag.force_off)) \
                    == (state, percent, on, off):
                return flag
            updated = conn.execute(_UPDATE, [state, percent, state in LIVE_STATES, on, off,
                                             name]).fetchone()
            flag = _flag(updated or row)
            _append_event(conn, flag, action, actor, reason, details or {})
        return flag

    def record(self, name: str, *, action: str, actor: str, reason: str,
               details: Mapping[str, Any]) -> None:
        """An event that changes nothing (a gate that held a stage, a dry-run decision)."""
        with self._admin() as conn, conn.transaction():
            row = conn.execute(_SELECT_ONE, [name]).fetchone()
            if row is None:
                raise UnknownFlagError(name)
            _append_event(conn, _flag(row), action, actor, reason, details)

    def _checked_variant(self, variant: Mapping[str, str]) -> dict[str, str]:
        if not variant:
            raise InvalidFlagError("variant", {}, "at least one of "
                                   + ", ".join(sorted(VARIANT_KEYS)))
        checked: dict[str, str] = {}
        for key, value in variant.items():
            if key not in VARIANT_KEYS:
                raise InvalidFlagError("variant", key, "one of " + ", ".join(sorted(VARIANT_KEYS)))
            allowed = VARIANT_KEYS[key]
            if allowed is None and self._allowed_values is not None:
                allowed = frozenset(self._allowed_values(key))
            if allowed is not None and value not in allowed:
                raise InvalidFlagError(f"variant.{key}", value,
                                       "one of " + ", ".join(sorted(allowed)))
            checked[key] = str(value)
        return checked


def _append_event(conn: Connection, flag: Flag, action: str, actor: str, reason: str,
                  details: Mapping[str, Any]) -> None:
    conn.execute(_EVENT, [flag.name, flag.percent, flag.state in LIVE_STATES, reason[:2000],
                          action, flag.state, actor[:200] or "rag",
                          Jsonb(json.loads(json.dumps(details, default=str)))])


class CachedFlags:
    """The flags as the query path sees them: read at most once per ``ttl_s``; the last
    good read stays in force while the database cannot be read (logged once per outage)."""

    def __init__(self, store: FlagStore, *, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0:
            raise ConfigurationError("flag cache ttl", ttl_s, "a number of seconds >= 0")
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._flags: tuple[Flag, ...] = ()
        self._read_at: float | None = None
        self._failing = False

    def current(self) -> tuple[Flag, ...]:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self._ttl_s:
            return self._flags
        with self._lock:
            if self._read_at is not None and self._clock() - self._read_at < self._ttl_s:
                return self._flags
            try:
                self._flags = tuple(self._store.all())
                self._failing = False
            except (psycopg.Error, OSError) as exc:
                if not self._failing:
                    _log.warning("feature flags not read (%s); the last ones read stay in "
                                 "force", type(exc).__name__)
                self._failing = True
            self._read_at = self._clock()
            return self._flags

    def invalidate(self) -> None:
        """Read again on the next lookup (after this process changed a flag itself)."""
        with self._lock:
            self._read_at = None
