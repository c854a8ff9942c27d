"""Feature flags in PostgreSQL: definitions checked, cohorts deterministic and sticky, moves
checked against the state under the row's lock, every change an event, the application
role read-only, and the query path's cache of flags bounded in time and outage-proof."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from rag_core.codes import ErrorCode
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.feature_flags import CachedFlags, FlagStore
from rag_core.db.flag_cohorts import Flag, cohort_label
from rag_core.db.pool import Database
from rag_core.errors import FlagStateError, InvalidFlagError, UnknownFlagError
from rag_core.ops import services

TENANTS = [f"tn_{i:032x}" for i in range(1, 2001)]


@pytest.fixture(scope="module")
def flag_settings(create_database: Callable[[str], Settings]) -> Settings:
    """A database of this module's own: flags are global, and a live one would change what
    every other test's tenants are answered with."""
    migrated = create_database("flags")
    services.upgrade_database(migrated)
    return migrated


@pytest.fixture(scope="module")
def platform(flag_settings: Settings) -> Iterator[Platform]:
    with Platform(flag_settings, start_services=False) as platform:
        yield platform


@pytest.fixture()
def store(platform: Platform) -> FlagStore:
    return platform.flags


def _name(request: pytest.FixtureRequest) -> str:
    return str(request.node.name).replace("test_", "f-")[:60].replace("_", "-")


def test_a_flag_is_created_off_with_its_variant_and_checked(
        store: FlagStore, request: pytest.FixtureRequest) -> None:
    flag = store.create(_name(request), {"retrieval_mode": "hybrid"}, description="hybrid")
    assert (flag.state, flag.percent, flag.stages) == ("off", 0, (5, 25, 50, 100))
    assert dict(flag.variant) == {"retrieval_mode": "hybrid"} and len(flag.salt) == 32
    # the same definition again is the same flag; another one under that name is refused
    assert store.create(flag.name, {"retrieval_mode": "hybrid"}).salt == flag.salt
    with pytest.raises(InvalidFlagError) as taken:
        store.create(flag.name, {"retrieval_mode": "dense"})
    assert taken.value.code is ErrorCode.INVALID_FLAG
    bad: list[tuple[str, dict[str, str], dict[str, Any]]] = [
        ("Bad Name", {"retrieval_mode": "hybrid"}, {}),
        ("f-x1", {}, {}),
        ("f-x2", {"colour": "blue"}, {}),
        ("f-x3", {"retrieval_mode": "sparse"}, {}),
        ("f-x4", {"prompt_version": "batch-qa-v9"}, {}),
        ("f-x5", {"embedding_model_key": "no-such-model"}, {}),
        ("f-x6", {"retrieval_mode": "hybrid"}, {"stages": (50, 25, 100)}),
        ("f-x7", {"retrieval_mode": "hybrid"}, {"stages": (5, 50)}),
        ("f-x8", {"retrieval_mode": "hybrid"}, {"force_on": ["tenant-1"]}),
    ]
    for name, variant, options in bad:
        with pytest.raises(InvalidFlagError) as refused:
            store.create(name, variant, **options)
        assert refused.value.value is not None, name
    assert [f.name for f in store.all()].count(flag.name) == 1
    assert not any(f.name.startswith("f-x") for f in store.all())


def test_cohorts_are_deterministic_sticky_and_about_the_percentage(
        store: FlagStore, request: pytest.FixtureRequest) -> None:
    flag = store.create(_name(request), {"prompt_version": "batch-qa-v2"})
    moved = store.transition(flag.name, state="rolling", percent=5, action="start",
                             actor="test", reason="canary")
    at5 = {t for t in TENANTS if moved.reaches(t)}
    assert 0.03 * len(TENANTS) < len(at5) < 0.07 * len(TENANTS)
    at25 = store.transition(flag.name, state="rolling", percent=25, action="advance",
                            actor="test", reason="next")
    in25 = {t for t in TENANTS if at25.reaches(t)}
    assert at5 < in25 and 0.21 * len(TENANTS) < len(in25) < 0.29 * len(TENANTS)
    # another process reading the same row agrees tenant by tenant
    again = next(f for f in store.all() if f.name == flag.name)
    assert {t for t in TENANTS if again.reaches(t)} == in25
    # another flag at the same percentage picks other tenants (its own salt)
    other = store.create(flag.name + "-b", {"prompt_version": "batch-qa-v2"})
    other = store.transition(other.name, state="rolling", percent=25, action="start",
                             actor="test", reason="x")
    overlap = len(in25 & {t for t in TENANTS if other.reaches(t)}) / len(in25)
    assert overlap < 0.45  # independent draws overlap by about 25 %
    label = cohort_label([at25, other], next(iter(at5)))
    assert label is not None and label.startswith(f"{flag.name}=canary,{other.name}=")


def test_force_lists_and_rollback_override_the_hash(
        store: FlagStore, request: pytest.FixtureRequest) -> None:
    on, off = TENANTS[0], TENANTS[1]
    flag = store.create(_name(request), {"retrieval_mode": "hybrid"}, force_on=[on],
                        force_off=[off])
    assert flag.reaches(on) and not flag.reaches(off)  # force_on works while off
    assert cohort_label([flag], on) is None  # nothing is being compared yet
    full = store.transition(flag.name, state="complete", percent=100, action="advance",
                            actor="test", reason="all")
    assert not full.reaches(off) and full.reaches(TENANTS[2])
    back = store.transition(flag.name, state="rolled_back", percent=0, action="rollback",
                            actor="test", reason="emergency")
    assert not any(back.reaches(t) for t in (on, off, TENANTS[2]))


def test_moves_are_checked_under_the_lock_and_recorded(
        store: FlagStore, request: pytest.FixtureRequest) -> None:
    flag = store.create(_name(request), {"retrieval_mode": "hybrid"})
    store.transition(flag.name, state="rolling", percent=5, action="start", actor="alice",
                     reason="go", from_states={"off"})
    with pytest.raises(FlagStateError) as refused:
        store.transition(flag.name, state="rolling", percent=5, action="start",
                         actor="bob", reason="again", from_states={"off", "rolled_back"})
    assert refused.value.code is ErrorCode.ROLLOUT_REFUSED and refused.value.state == "rolling"
    # a move to where the flag already is changes nothing and records nothing
    store.transition(flag.name, state="rolling", percent=5, action="start", actor="alice",
                     reason="repeat")
    store.record(flag.name, action="gate_held", actor="rollout", reason="too few requests",
                 details={"canary": {"requests": 3}})
    history = store.history(flag.name)
    assert [(e.action, e.state, e.percent, e.actor) for e in history] == [
        ("gate_held", "rolling", 5, "rollout"), ("start", "rolling", 5, "alice"),
        ("create", "off", 0, "rag")]
    assert history[0].details == {"canary": {"requests": 3}}
    with pytest.raises(UnknownFlagError) as unknown:
        store.transition("no-such-flag", state="off", percent=0, action="x", actor="t",
                         reason="")
    assert unknown.value.code is ErrorCode.UNKNOWN_FLAG


def test_the_application_role_reads_flags_and_cannot_change_them(
        platform: Platform, store: FlagStore, request: pytest.FixtureRequest) -> None:
    flag = store.create(_name(request), {"retrieval_mode": "hybrid"})
    database: Database = platform.database
    with database.unscoped_session() as conn:
        assert conn.execute("SELECT count(*) FROM rag.feature_flags WHERE flag_key = %s",
                            [flag.name]).fetchone() == (1,)
    for statement in ("UPDATE rag.feature_flags SET rollout_percent = 100",
                      "INSERT INTO rag.feature_flag_events (flag_key, rollout_percent, "
                      "enabled) VALUES ('x', 1, true)",
                      "SELECT count(*) FROM rag.feature_flag_events"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), \
                database.unscoped_session() as conn:
            conn.execute(statement)


def test_the_table_refuses_inconsistent_rows(platform: Platform,
                                             request: pytest.FixtureRequest) -> None:
    name = _name(request)
    platform.flags.create(name, {"retrieval_mode": "hybrid"})
    with platform.admin_connection() as conn:
        for update in ("state = 'complete', rollout_percent = 50, enabled = true",
                       "state = 'rolled_back', rollout_percent = 5, enabled = false",
                       "state = 'rolling', rollout_percent = 5, enabled = false",
                       "stages = '{5,50}'"):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(f"UPDATE rag.feature_flags SET {update} "  # noqa: S608
                             "WHERE flag_key = %s", [name])


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Store:
    """A flag source that counts its reads and can fail like a database that went away."""

    def __init__(self, flags: list[Flag]) -> None:
        self.flags, self.reads, self.failing = flags, 0, False

    def all(self) -> list[Flag]:
        self.reads += 1
        if self.failing:
            raise psycopg.OperationalError("server closed the connection")
        return list(self.flags)


def test_the_cache_reads_once_per_ttl_and_keeps_the_last_flags_through_an_outage() -> None:
    flag = Flag("f", "rolling", 5, (5, 100), {"retrieval_mode": "hybrid"}, "00" * 16)
    source, clock = _Store([flag]), _Clock()
    cached = CachedFlags(source, ttl_s=2.0, clock=clock)  # type: ignore[arg-type]
    assert cached.current() == (flag,) and cached.current() == (flag,)
    assert source.reads == 1
    clock.now = 2.5
    source.failing = True
    assert cached.current() == (flag,) and source.reads == 2  # tried, kept the last read
    assert cached.current() == (flag,) and source.reads == 2  # and waits a ttl to retry
    source.failing, source.flags = False, []
    clock.now = 5.0
    assert cached.current() == () and source.reads == 3
