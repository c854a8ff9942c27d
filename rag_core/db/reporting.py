"""Whether the analysts' roles of migration 0013 are as safe as that migration made them.

The analytics role (``Settings.analytics_db_role``, default ``rag_analyst``) reads the views
of ``rag_reporting`` across tenants; their owner (``rag_reporting_owner``) reads the base
tables past RLS through one all-rows SELECT policy per reported table. That is safe only
while these facts hold, each read from pg_catalog (any connection may read them, so the
doctor checks them in admin and runtime processes alike):

* neither role is a superuser or ``BYPASSRLS``; the owner cannot log in, and no role is its
  member (a member would read through the all-rows policies with its own grants) other than
  the owner of schema ``rag`` (the admin, who owns the tables anyway);
* the analytics role can log in, and may not create roles or databases;
* neither holds any privilege on a tenant table that has no reporting view (documents,
  chunks, vectors, batches, API keys, and whatever a later migration adds), nor on a column
  the views withhold; the analytics role holds none on any table of schema ``rag``;
* every relation of ``rag_reporting`` is the owner's (a view reads with its owner's
  rights: one of the admin's would read as the admin);
* the application role cannot use schema ``rag_reporting`` (it would read every tenant's
  audit rows through the views).
"""

from __future__ import annotations

from typing import Any

import psycopg

from rag_core.db.schema import (
    ANALYTICS_SCHEMA,
    REPORTED_GLOBAL_TABLES,
    REPORTED_TENANT_TABLES,
    REPORTING_OWNER,
    REPORTING_SCHEMA,
)

Connection = psycopg.Connection[tuple[Any, ...]]

_ANY_TABLE_PRIVILEGE = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
_ANY_COLUMN_PRIVILEGE = "SELECT, INSERT, UPDATE, REFERENCES"

_ROLE = """
SELECT rolsuper, rolbypassrls, rolcanlogin, rolcreaterole, rolcreatedb
  FROM pg_roles WHERE rolname = %s
"""

# Roles through which the owner's rights (and so its all-rows policies) can be used.
_MEMBERS = """
SELECT r.rolname FROM pg_roles r
 WHERE r.rolname <> %(owner)s AND NOT r.rolsuper
   AND pg_has_role(r.oid, (SELECT oid FROM pg_roles WHERE rolname = %(owner)s), 'MEMBER')
   AND r.oid IS DISTINCT FROM (SELECT nspowner FROM pg_namespace WHERE nspname = 'rag')
 ORDER BY 1
"""

# Tables with a tenant column outside dbt's schema (whose tenant-keyed tables the analytics
# role builds itself, from the views), with whether a reporting view shows them.
_TENANT_TABLES = """
SELECT c.oid, format('%%I.%%I', n.nspname, c.relname),
       n.nspname = 'rag' AND c.relname = ANY(%(reported)s)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%%'
   AND n.nspname NOT IN ('information_schema', %(analytics)s)
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                  AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped)
 ORDER BY 2
"""


def _role_problems(conn: Connection, role: str, *, login: bool) -> list[str]:
    row = conn.execute(_ROLE, [role]).fetchone()
    if row is None:
        return [f"role {role} does not exist: run `rag db upgrade`"]
    is_super, bypasses, can_login, creates_roles, creates_databases = (bool(v) for v in row)
    found = [(is_super, "is a superuser"), (bypasses, "has BYPASSRLS"),
             (creates_roles, "may create roles"), (creates_databases, "may create databases"),
             (can_login != login, "can log in" if can_login else "cannot log in")]
    return [f"{role} {reason}" for bad, reason in found if bad]


def _privilege_problems(conn: Connection, role: str) -> list[str]:
    problems = []
    for oid, name, reported in conn.execute(
            _TENANT_TABLES, {"reported": list(REPORTED_TENANT_TABLES),
                             "analytics": ANALYTICS_SCHEMA}).fetchall():
        if reported:
            continue
        row = conn.execute("SELECT has_table_privilege(%s, %s, %s) "
                           "    OR has_any_column_privilege(%s, %s, %s)",
                           [role, oid, _ANY_TABLE_PRIVILEGE,
                            role, oid, _ANY_COLUMN_PRIVILEGE]).fetchone()
        if row is not None and row[0]:
            problems.append(f"{role} holds a privilege on {name} (tenant content)")
    withheld = {**REPORTED_TENANT_TABLES, **REPORTED_GLOBAL_TABLES}
    for table, columns in withheld.items():
        for column in columns:
            row = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL AND has_column_privilege(%s, "
                "to_regclass(%s), %s, 'SELECT')",
                [f"rag.{table}", role, f"rag.{table}", column]).fetchone()
            if row is not None and row[0]:
                problems.append(f"{role} may read rag.{table}.{column}")
    return problems


def reporting_problems(conn: Connection, analytics_role: str, app_role: str) -> list[str]:
    """What makes the analysts' roles unsafe (empty when nothing does; see the module
    docstring for the rules)."""
    problems = (_role_problems(conn, analytics_role, login=True)
                + _role_problems(conn, REPORTING_OWNER, login=False))
    if any(problem.endswith("run `rag db upgrade`") for problem in problems):
        return problems
    foreign = [str(r[0]) for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE n.nspname = %s AND c.relowner <> %s::regrole ORDER BY 1",
        [REPORTING_SCHEMA, REPORTING_OWNER])]
    if foreign:
        problems.append(f"{REPORTING_SCHEMA} holds relations not owned by {REPORTING_OWNER} "
                        f"(read with their owner's rights): {', '.join(foreign)}")
    members = [str(r[0]) for r in conn.execute(_MEMBERS, {"owner": REPORTING_OWNER})]
    if members:
        problems.append(f"{', '.join(members)} may use the rights of {REPORTING_OWNER} "
                        "(every tenant's reported rows): revoke the membership")
    for role in (analytics_role, REPORTING_OWNER):
        problems.extend(_privilege_problems(conn, role))
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE n.nspname = 'rag' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "   AND (has_table_privilege(%s, c.oid, %s) OR has_any_column_privilege(%s, c.oid, %s))",
        [analytics_role, _ANY_TABLE_PRIVILEGE, analytics_role, _ANY_COLUMN_PRIVILEGE]).fetchone()
    if row is not None and row[0]:
        problems.append(f"{analytics_role} holds privileges on {row[0]} table(s) of schema rag")
    usable = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) "
        "   AND to_regnamespace(%s) IS NOT NULL "
        "   AND has_schema_privilege(%s, to_regnamespace(%s), 'USAGE')",
        [app_role, REPORTING_SCHEMA, app_role, REPORTING_SCHEMA]).fetchone()
    if usable is not None and usable[0]:
        problems.append(f"the application role {app_role} may use schema {REPORTING_SCHEMA} "
                        "(every tenant's audit rows)")
    return problems
