"""An analyst's ad-hoc SQL over the marts, as the analytics role (``rag analytics sql``).

For users without a SQL client of their own (psql is not part of the platform's install):
the query runs on the analytics role's connection, never the admin's, in a READ ONLY
transaction with a statement timeout, so what the role may read is all it can see and a
typo in a long query cannot hold the server. The role's own privileges (migration 0013) are
the real boundary; READ ONLY only keeps an analyst's session from creating tables in
``rag_analytics`` by accident (dbt owns that schema).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from rag_core.config import Settings
from rag_core.db.connection import connect, redact_url, resolve_analytics_target
from rag_core.errors import DatabaseError, InputError

__all__ = ["QueryResult", "analytics_url", "run_analytics_query"]


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns,
                "rows": [[_jsonable(value) for value in row] for row in self.rows],
                "row_count": len(self.rows), "truncated": self.truncated}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # dates, decimals, uuids: their SQL text


def analytics_url(settings: Settings, *, show_password: bool = False) -> str:
    """The analytics role's connection URL (password masked unless asked for)."""
    url = resolve_analytics_target(settings).url
    return url if show_password else redact_url(url)


def run_analytics_query(settings: Settings, query: str, *, max_rows: int = 1000,
                        timeout_s: float = 60.0) -> QueryResult:
    """Run one statement as the analytics role, read only; at most ``max_rows`` rows."""
    if not query.strip():
        raise InputError("the query is empty")
    if max_rows < 1:
        raise InputError(f"max_rows must be at least 1, got {max_rows}")
    target = resolve_analytics_target(settings)
    with connect(target.url, connect_timeout_s=settings.db_connect_timeout_s,
                 pooler=settings.db_pooler) as conn:
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute("SELECT set_config('statement_timeout', %s, true)",
                             [f"{max(1, round(timeout_s * 1000))}ms"])
                cursor = conn.execute(query.encode())
                if cursor.description is None:
                    return QueryResult([], [], truncated=False)
                columns = [column.name for column in cursor.description]
                rows = cursor.fetchmany(max_rows + 1)
        except psycopg.Error as exc:
            raise DatabaseError(f"the query failed as {target.role}: "
                                f"{str(exc).strip().splitlines()[0]}") from exc
    return QueryResult(columns, rows[:max_rows], truncated=len(rows) > max_rows)
