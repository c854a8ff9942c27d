"""Which tables hold tenant rows, and whether their row-level security actually isolates.

Read from pg_catalog rather than from a list in the code, so a table a later migration (or
an operator) adds with a ``tenant_id`` column is checked the day it appears. Which schemas
count: ``rag`` and ``rag_meta`` (the product's own), and every other schema the application
role can use (what a runtime can reach is what must be isolated). A tenant-keyed table in a
schema the application role cannot use (dbt's analytics schema, cross-tenant by design) is
reported but not judged.

What "isolates" means, per table (``policy_problems``):

* RLS is ENABLEd and FORCEd (else the owner, and anything running as it, sees every row),
  with at least one policy;
* every PERMISSIVE policy (permissive policies are OR-ed: one that admits a row is enough)
  compares the ``tenant_id`` column with the tenant setting (``rag.current_tenant_id()`` or
  ``current_setting('app.tenant_id')``) in ``USING`` and in ``WITH CHECK``, and is not a
  constant (``USING (true)``) or widened with ``OR``. A policy that applies to writes
  (ALL, INSERT, UPDATE) must have its own ``WITH CHECK``: without one, PostgreSQL checks new
  rows of an INSERT policy against nothing. Restrictive policies only narrow what permissive
  ones admit, so they are not judged;
* one exception, by name: an owner lookup (``OWNER_LOOKUP_POLICIES`` in
  :mod:`rag_core.db.schema`, e.g. the API key resolution of migration 0010) passes when it
  is for SELECT alone, for the table's owner alone, with exactly its documented ``USING``
  and no ``WITH CHECK``. Anything else about it is judged like any permissive policy;
* another, by name: the reporting read of migration 0013 (``REPORTING_POLICY`` on a table
  of ``REPORTED_TENANT_TABLES``) passes when it is for SELECT alone, for
  ``REPORTING_OWNER`` alone, ``USING (true)`` and no ``WITH CHECK``. That role reads all
  tenants' rows of the table by design; whether it is safe (NOLOGIN, nobody's member, no
  grant on tenant content) is the doctor's analytics check (:mod:`rag_core.db.reporting`).

The rules read the deparsed expression (``pg_get_expr``): a textual check, strict on purpose
(fail closed): a policy the doctor cannot read as a tenant comparison is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from rag_core.db.schema import (
    OWNER_LOOKUP_POLICIES,
    REPORTED_TENANT_TABLES,
    REPORTING_OWNER,
    REPORTING_POLICY,
)

Connection = psycopg.Connection[tuple[Any, ...]]

PRODUCT_SCHEMAS = ("rag", "rag_meta")
TENANT_COLUMN = "tenant_id"

# Tables (plain and partitioned) with a tenant column, in every non-system schema, with
# whether the product judges them (its own schemas, or the application role may use the
# schema). %(role)s: the application role's name (it may not exist yet: then only the
# product's schemas are judged).
_TENANT_TABLES = """
SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
       n.nspname = ANY(%(product)s)
         OR coalesce((SELECT has_schema_privilege(r.oid, n.oid, 'USAGE')
                        FROM pg_roles r WHERE r.rolname = %(role)s), false)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
   AND EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = %(column)s AND a.attnum > 0
                  AND NOT a.attisdropped)
 ORDER BY 1, 2
"""

# Role 0 in polroles is PUBLIC; the owner comes along to judge owner lookups.
_POLICIES = """
SELECT n.nspname, c.relname, p.polname, p.polpermissive, p.polcmd,
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END
               FROM unnest(p.polroles) AS r),
       pg_get_userbyid(c.relowner)
  FROM pg_policy p
  JOIN pg_class c ON c.oid = p.polrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
"""

_COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_READS = {"ALL", "SELECT", "UPDATE", "DELETE"}  # commands whose USING filters rows
_WRITES = {"ALL", "INSERT", "UPDATE"}           # commands whose WITH CHECK guards new rows

_SETTING = (r"(?:rag\.current_tenant_id\(\)"
            r"|current_setting\('app\.tenant_id'(?:::text)?(?:,\s*true)?\)(?:::[\w.]+)?)")
_COLUMN = r"\(*(?<![\w.'])tenant_id\)*(?:::[\w.]+)?\)*"
_TENANT_SETTING = re.compile(_SETTING, re.IGNORECASE)
# tenant_id = <setting> or <setting> = tenant_id, casts and parentheses allowed.
_TENANT_COMPARISON = re.compile(
    rf"{_COLUMN}\s*=\s*\(*{_SETTING}|{_SETTING}\)*\s*=\s*{_COLUMN}", re.IGNORECASE)
_OR = re.compile(r"\bOR\b", re.IGNORECASE)


@dataclass(frozen=True)
class Policy:
    name: str
    permissive: bool
    command: str  # ALL, SELECT, INSERT, UPDATE or DELETE
    using: str | None
    with_check: str | None
    roles: tuple[str, ...] = ("public",)  # the roles it applies to ("public": every role)
    table_owner: str = ""


@dataclass(frozen=True)
class TenantTable:
    schema: str
    name: str
    rls_enabled: bool
    rls_forced: bool
    judged: bool  # in the product's schemas, or reachable by the application role
    policies: tuple[Policy, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


def find_tenant_tables(conn: Connection, app_role: str) -> list[TenantTable]:
    """Every table with a ``tenant_id`` column in the database, with its RLS facts."""
    policies: dict[tuple[str, str], list[Policy]] = {}
    for schema, table, name, permissive, command, using, check, roles, owner in conn.execute(
            _POLICIES).fetchall():
        policies.setdefault((str(schema), str(table)), []).append(Policy(
            str(name), bool(permissive), _COMMANDS.get(str(command), str(command)),
            None if using is None else str(using), None if check is None else str(check),
            tuple(str(r) for r in roles), str(owner)))
    rows = conn.execute(_TENANT_TABLES, {"product": list(PRODUCT_SCHEMAS), "role": app_role,
                                         "column": TENANT_COLUMN}).fetchall()
    return [TenantTable(str(schema), str(name), bool(enabled), bool(forced), bool(judged),
                        tuple(policies.get((str(schema), str(name)), ())))
            for schema, name, enabled, forced, judged in rows]


def _expression_problem(expression: str | None, clause: str) -> str | None:
    if expression is None:
        return f"no {clause}"
    bare = expression.strip().strip("()").strip().lower()
    if bare in {"true", "1 = 1"}:
        return f"{clause} ({expression}) is always true"
    if not _TENANT_SETTING.search(expression):
        return f"{clause} ({expression}) does not read the tenant setting"
    if not _TENANT_COMPARISON.search(expression):
        return f"{clause} ({expression}) does not compare tenant_id with the tenant setting"
    if _OR.search(expression):
        return f"{clause} ({expression}) widens the tenant comparison with OR"
    return None


def is_owner_lookup(table: TenantTable, policy: Policy) -> bool:
    """Whether ``policy`` is a documented owner lookup, exactly as documented (see the module
    docstring): it then admits no role but the owner, and one row at a time."""
    expected = OWNER_LOOKUP_POLICIES.get((table.schema, table.name, policy.name))
    return (expected is not None and policy.command == "SELECT"
            and policy.roles == (policy.table_owner,) and policy.using == expected
            and policy.with_check is None)


def is_reporting_read(table: TenantTable, policy: Policy) -> bool:
    """Whether ``policy`` is migration 0013's reporting read, exactly as documented."""
    return (table.schema == "rag" and table.name in REPORTED_TENANT_TABLES
            and policy.name == REPORTING_POLICY and policy.command == "SELECT"
            and policy.roles == (REPORTING_OWNER,) and policy.using == "true"
            and policy.with_check is None)


def policy_problems(table: TenantTable) -> list[str]:
    """Why ``table`` is not isolated per tenant (empty when it is)."""
    problems = []
    if not table.rls_enabled:
        problems.append("row-level security not enabled")
    if not table.rls_forced:
        problems.append("row-level security not forced (the owner bypasses it)")
    if not table.policies:
        problems.append("no policy")
    for policy in table.policies:
        if not policy.permissive or is_owner_lookup(table, policy) \
                or is_reporting_read(table, policy):
            continue
        clauses = []
        if policy.command in _READS:
            clauses.append(("USING", policy.using))
        if policy.command in _WRITES:
            clauses.append(("WITH CHECK", policy.with_check))
        for clause, expression in clauses:
            problem = _expression_problem(expression, clause)
            if problem is not None:
                problems.append(f"permissive policy {policy.name} ({policy.command}): "
                                f"{problem}")
    return problems
