"""Per-tenant daily token quotas with reserve/settle, enforced atomically in Redis.

**Daily token quota** (``TokenQuota``): per tenant and UTC day, a hash of totals
(``used``, ``reserved``), a hash of open reservations and their expiry times, and a hash of
settled reservation ids. ``reserve`` refuses when ``used + reserved + estimate > quota``;
``settle`` swaps the estimate for the actual usage exactly once; a reservation that is never
settled (a crashed worker) is released after ``reservation_ttl_s``.

**Clock.** Every time used here is the Redis server's clock (``TIME``), never the caller's:
hosts with skewed clocks still share one "today". The quota operations read ``TIME`` once
before running their script, because the UTC-day key names must be known before the script
runs (a script must declare its keys); the script then reads ``TIME`` again for reservation
expiry. A call that straddles midnight is charged to the day it started in, and a
reservation is always settled against the day it was made in (the day is part of the
``Reservation``).

**Metric.** Every reservation, admitted or refused, observes the tenant's usage fraction in
``rag_quota_usage_fraction`` (no tenant label): the warning alert "token quota usage > 80%"
counts reservations made above that bound.

**Keys.** Day keys expire one day after the end of their day, so yesterday's usage stays
readable for reports. What the quota shares with the request limit (keys with the tenant as
a hash tag, policies per tenant, Redis failures as ``RateLimitBackendError``) is
:mod:`rag_core.limits.backend`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from rag_core.common.metrics import QUOTA_USAGE_FRACTION
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import RateLimitPolicy
from rag_core.errors import (
    InvalidTokenCountError,
    RateLimitBackendError,
    TokenQuotaExceededError,
)
from rag_core.limits.backend import US_PER_S, RedisBacked

__all__ = ["QuotaUsage", "Reservation", "Settlement", "TokenQuota"]

_DAY_KEY_GRACE_S = 86_400  # day keys outlive their day by this much (reports, late settles)


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one LLM call until ``settle`` (or until the reservation expires)."""

    tenant_id: TenantId
    reservation_id: str
    day: str  # UTC day the reservation counts against, YYYYMMDD
    estimated_tokens: int


@dataclass(frozen=True)
class Settlement:
    """Outcome of ``settle``.

    ``applied`` is False when the reservation had already been settled (nothing changed).
    ``reservation_was_open`` is False when the reservation had expired before the settle; the
    actual tokens are still charged (they were spent), only the hold had already lapsed.
    """

    reservation_id: str
    actual_tokens: int
    applied: bool
    reservation_was_open: bool


@dataclass(frozen=True)
class QuotaUsage:
    """A tenant's token usage today. ``fraction`` counts open reservations as used."""

    tenant_id: TenantId
    day: str
    used: int
    reserved: int
    quota: int
    alert_fraction: float

    @property
    def fraction(self) -> float:
        """``(used + reserved) / quota``: the figure that admission is checked against."""
        return (self.used + self.reserved) / self.quota

    @property
    def above_alert_threshold(self) -> bool:
        """True when ``fraction`` is strictly above the policy's ``alert_fraction``."""
        return self.fraction > self.alert_fraction

    @property
    def remaining(self) -> int:
        return max(self.quota - self.used - self.reserved, 0)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (for a metrics exporter, an admin endpoint or ``--json`` output)."""
        return {"tenant_id": self.tenant_id, "day": self.day, "used": self.used,
                "reserved": self.reserved, "quota": self.quota,
                "fraction": round(self.fraction, 6), "alert_fraction": self.alert_fraction,
                "above_alert_threshold": self.above_alert_threshold}


# --- Lua -----------------------------------------------------------------------------------
# Shared prelude of the quota scripts. KEYS[1] totals hash (used, reserved), KEYS[2] open
# reservations hash (id -> tokens), KEYS[3] expiry zset (id -> deadline us), KEYS[4] settled
# hash (id -> actual tokens). Releases every reservation whose deadline has passed.
_QUOTA_PRELUDE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(expired) do
  local held = redis.call('HGET', KEYS[2], id)
  if held then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
  end
  redis.call('ZREM', KEYS[3], id)
end
local function expire_all(ttl)
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
end
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
"""

# ARGV: quota, estimate, reservation id, ttl_us, key ttl s.
# Returns {admitted (0/1), used, reserved (after the call)}.
_RESERVE_LUA = _QUOTA_PRELUDE_LUA + """
local quota = tonumber(ARGV[1])
local estimate = tonumber(ARGV[2])
if used + reserved + estimate > quota then
  return {0, used, reserved}
end
redis.call('HSET', KEYS[2], ARGV[3], estimate)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3])
redis.call('HINCRBY', KEYS[1], 'reserved', estimate)
expire_all(tonumber(ARGV[5]))
return {1, used, reserved + estimate}
"""

# ARGV: reservation id, actual tokens, key ttl s.
# Returns {applied (0/1), reservation was open (0/1), recorded actual tokens}.
_SETTLE_LUA = _QUOTA_PRELUDE_LUA + """
local previous = redis.call('HGET', KEYS[4], ARGV[1])
if previous then
  return {0, 0, tonumber(previous)}
end
local actual = tonumber(ARGV[2])
local held = redis.call('HGET', KEYS[2], ARGV[1])
local was_open = 0
if held then
  was_open = 1
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
end
redis.call('HINCRBY', KEYS[1], 'used', actual)
redis.call('HSET', KEYS[4], ARGV[1], actual)
expire_all(tonumber(ARGV[3]))
return {1, was_open, actual}
"""

# ARGV: key ttl s, then pairs (charge id, tokens): usage spent without a settled reservation.
# Each id is charged once per day (the settled hash is the marker, set in the same atomic
# step as the HINCRBY); a reservation still open under that id is released.
# Returns {ids charged, tokens charged}.
_CHARGE_LUA = _QUOTA_PRELUDE_LUA + """
local applied, charged = 0, 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[4], id) == 0 then
    local tokens = tonumber(ARGV[i + 1])
    local held = redis.call('HGET', KEYS[2], id)
    if held then
      redis.call('HDEL', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
      redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
    end
    redis.call('HINCRBY', KEYS[1], 'used', tokens)
    redis.call('HSET', KEYS[4], id, tokens)
    applied = applied + 1
    charged = charged + tokens
  end
end
expire_all(tonumber(ARGV[1]))
return {applied, charged}
"""

# No ARGV. Returns {used, reserved} after releasing expired reservations.
_USAGE_LUA = _QUOTA_PRELUDE_LUA + """
return {used, reserved}
"""


def _check_tokens(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidTokenCountError(name, value)
    return value


class TokenQuota(RedisBacked):
    """Daily token quota per tenant with reserve/settle (see the module docstring)."""

    def __init__(self, client: redis.Redis, policy: RateLimitPolicy | None = None,
                 overrides: Mapping[str, RateLimitPolicy] | None = None) -> None:
        super().__init__(client, policy, overrides)
        self._reserve = client.register_script(_RESERVE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._usage = client.register_script(_USAGE_LUA)
        self._charge = client.register_script(_CHARGE_LUA)

    # -- keys and clock --
    def day_keys(self, tenant_id: str, day: str) -> list[str]:
        """The four keys of ``tenant_id``'s quota on UTC day ``day`` (YYYYMMDD)."""
        tenant = parse_tenant_id(tenant_id)
        base = f"{self.policy_for(tenant).key_prefix}:quota:{{{tenant}}}:{day}"
        return [f"{base}:totals", f"{base}:open", f"{base}:expiry", f"{base}:settled"]

    def server_now(self, tenant: TenantId) -> datetime:
        """The Redis server's clock, as an aware UTC datetime."""
        try:
            seconds, micros = self._redis.time()
        except redis.RedisError as exc:
            raise RateLimitBackendError("time", tenant, str(exc)) from exc
        return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)

    @staticmethod
    def _day_of(now: datetime) -> tuple[str, float]:
        """The UTC day key of ``now`` and the seconds left until the next UTC midnight."""
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        return now.strftime("%Y%m%d"), (midnight - now).total_seconds()

    # -- operations --
    def reserve(self, tenant_id: str, estimated_tokens: int) -> Reservation:
        """Hold ``estimated_tokens`` of today's quota or raise ``TokenQuotaExceededError``."""
        tenant = parse_tenant_id(tenant_id)
        estimate = _check_tokens("estimated_tokens", estimated_tokens)
        policy = self.policy_for(tenant)
        day, to_midnight = self._day_of(self.server_now(tenant))
        reservation_id = secrets.token_hex(16)
        admitted, used, reserved = self._run(
            self._reserve, "reserve", tenant, self.day_keys(tenant, day),
            [policy.tokens_per_day, estimate, reservation_id,
             max(round(policy.reservation_ttl_s * US_PER_S), 1),
             int(to_midnight) + 1 + _DAY_KEY_GRACE_S],
        )
        # The tenant's usage as this reservation found it (see rag_quota_usage_fraction).
        QUOTA_USAGE_FRACTION.observe((used + reserved) / policy.tokens_per_day)
        if not admitted:
            raise TokenQuotaExceededError(tenant, policy.tokens_per_day, used, estimate,
                                          to_midnight, reserved=reserved)
        return Reservation(tenant, reservation_id, day, estimate)

    def settle(self, reservation: Reservation, actual_tokens: int) -> Settlement:
        """Replace the reservation's estimate by ``actual_tokens``; idempotent per reservation.

        A second settle of the same reservation changes nothing and reports the tokens the
        first one recorded. Usage may exceed the quota after a settle: tokens that were spent
        are always charged.
        """
        tenant = parse_tenant_id(reservation.tenant_id)
        actual = _check_tokens("actual_tokens", actual_tokens)
        _, to_midnight = self._day_of(self.server_now(tenant))
        applied, was_open, recorded = self._run(
            self._settle, "settle", tenant, self.day_keys(tenant, reservation.day),
            # a settle after midnight keeps yesterday's keys one more day (not forever)
            [reservation.reservation_id, actual, int(to_midnight) + 1 + _DAY_KEY_GRACE_S],
        )
        return Settlement(reservation.reservation_id, recorded, bool(applied), bool(was_open))

    def charge(self, tenant_id: str, day: str,
               charges: Sequence[tuple[str, int]]) -> tuple[int, int]:
        """Charge ``(charge id, tokens)`` pairs to ``day``'s (YYYYMMDD) usage, each id once.

        For usage that no settle recorded (Redis was down): an id already settled, by
        ``settle`` or an earlier ``charge``, changes nothing. One script call is atomic, so
        an interrupted settlement never charges an id twice. Returns (ids charged, tokens).
        """
        tenant = parse_tenant_id(tenant_id)
        args: list[int | float | str] = []
        for charge_id, tokens in charges:
            args += [charge_id, _check_tokens("tokens", tokens)]
        if not args:
            return 0, 0
        _, to_midnight = self._day_of(self.server_now(tenant))
        applied, charged = self._run(self._charge, "charge", tenant,
                                     self.day_keys(tenant, day),
                                     [int(to_midnight) + 1 + _DAY_KEY_GRACE_S, *args])
        return applied, charged

    def usage(self, tenant_id: str, day: str | None = None) -> QuotaUsage:
        """Today's (or ``day``'s) usage; expired reservations are released first."""
        tenant = parse_tenant_id(tenant_id)
        policy = self.policy_for(tenant)
        if day is None:
            day, _ = self._day_of(self.server_now(tenant))
        used, reserved = self._run(self._usage, "usage", tenant,
                                   self.day_keys(tenant, day), [])
        return QuotaUsage(tenant, day, used, reserved, policy.tokens_per_day,
                          policy.alert_fraction)
