"""The server-side HMAC keys of a platform (session ids, the audit log's question hash):
configured, or created once in the state folder and read back by every later process."""

from __future__ import annotations

import secrets

from pydantic import SecretStr

from rag_core.common.processes import file_lock, write_atomic
from rag_core.config import Settings
from rag_core.query.audit import checked_audit_key

__all__ = ["audit_hash_key", "session_key"]


def _server_key(settings: Settings, configured: SecretStr | None, file_name: str,
                lock_name: str) -> bytes:
    """A server-side HMAC key: configured, or created once (0600) in the state folder and
    read back by every later process; the lock makes concurrent first starts agree."""
    if configured is not None:
        return configured.get_secret_value().encode()
    path = settings.state_dir / file_name
    if not path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(settings.state_dir / lock_name):
            if not path.exists():
                write_atomic(path, secrets.token_hex(32), mode=0o600)
    return path.read_text().strip().encode()


def session_key(settings: Settings) -> bytes:
    """The HMAC key for session ids: configured, or created once in the state folder."""
    return _server_key(settings, settings.session_hash_key, "session_hash.key",
                       ".session_key.lock")


def audit_hash_key(settings: Settings) -> bytes:
    """The HMAC key of the audit log's question hash (``RAG_AUDIT_HASH_KEY``, or created
    once in the state folder like the session key)."""
    return checked_audit_key(_server_key(settings, settings.audit_hash_key,
                                         "audit_hash.key", ".audit_hash_key.lock"))
