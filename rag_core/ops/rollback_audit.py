"""The emergency rollback's own audit trail: an append-only JSON-lines file, 0600.

Why a file and not (only) a table: ``rag rollback --to-migration N`` may drop the very
tables a database record would go in (below 0012 the flag events lose their actor and
details columns, at 0 schema ``rag`` is gone), and the step that fails may be the
database's own (unreachable, a down script that errors): the record of that failure must
still be written. A file under the state folder survives every downgrade and every
outage of the servers it is about. The flag moves are also in ``rag.feature_flag_events``
(with the run's id in ``details``), where the rollout tools read a flag's history.

One line per record, written with ``O_APPEND`` under an exclusive lock (two rollbacks at
once never interleave a line) and synced before the step it announces runs on, so what
the file says was done was at least attempted. The file is never truncated or rewritten
by the product; a link in its place is refused (``O_NOFOLLOW``), and its mode is put back
to 0600 if someone widened it (it names flags, tenants and operators).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag_core.common.processes import file_lock
from rag_core.config import Settings
from rag_core.errors import ConfigurationError

__all__ = ["RollbackAuditLog", "default_audit_path"]


def default_audit_path(settings: Settings) -> Path:
    """Where ``rag rollback`` appends its records: ``<state folder>/audit/rollback.jsonl``."""
    return settings.state_dir / "audit" / "rollback.jsonl"


class RollbackAuditLog:
    """Appends records (one JSON object per line) to ``path``; reads them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = path.with_name(f".{path.name}.lock")

    def append(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` with the time it was written as ``at``; a file that cannot be
        written is a :class:`ConfigurationError` naming it (the caller stops: an unaudited
        step does not run)."""
        line = json.dumps({"at": datetime.now(UTC).isoformat(), **record}, default=str,
                          sort_keys=False) + "\n"
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with file_lock(self._lock):
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o600)
                try:
                    if os.fstat(fd).st_mode & 0o077:
                        os.fchmod(fd, 0o600)
                    os.write(fd, line.encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise ConfigurationError("rollback audit log", str(self.path),
                                     f"cannot be appended to ({exc.strerror or exc})") from exc

    def records(self, run_id: str | None = None) -> Iterator[dict[str, Any]]:
        """The records in the order written (only those of ``run_id`` when given); a line
        that does not parse (a torn write of a crashed writer) is skipped."""
        try:
            handle = self.path.open(encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for text in handle:
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and (run_id is None or record.get("run_id") == run_id):
                    yield record
