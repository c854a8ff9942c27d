"""Paths named by a caller who is not the local user: confined to configured folders.

A Prefect deployment parameter (and, next, an API body) is typed by someone who should
reach a tenant's documents and answers, not the machine: unconfined, a source of
``.rag/pg/credentials.json`` would ingest the database password into a tenant, and an
output path would overwrite any file the worker may write. The local CLI user may still
name any path (it is their machine); symbolic links that leave a source folder are refused
everywhere by the ingestion reader (``rag_core.ingestion.sources``), which this module does
not repeat: a confined folder's links are checked when it is walked.

Rules:

* An input path (:func:`confine`) is resolved with every symbolic link followed and must
  land inside one of the roots (a root itself counts). A relative path is taken from the
  working folder, the project folder (where prefect.yaml's pull step puts a worker, and what
  ``RAG_STATE_DIR=.rag`` is relative to), so the shipped demo data keeps its
  ``data/scifact/...`` name. A path that does not exist is refused when it would be
  outside, and otherwise returned for the reader to report as missing under its own code:
  a caller cannot probe which files exist outside the roots.
* An output (:func:`output_path`) is a name under one folder; ``..``, absolute paths
  elsewhere and folders that are links out are refused, and so is a name that is itself a
  symbolic link (even one pointing inside: the link's owner chose where it points, not the
  caller). :func:`write_private` then writes the file 0600 under a temporary name opened
  with ``O_NOFOLLOW | O_EXCL`` and renames it over the target when complete, so a failed
  run never leaves a half-written file or destroys the previous one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rag_core.errors import PathOutsideRootsError

__all__ = ["confine", "output_path", "write_private"]


def _resolve(path: Path, given: str, roots: Sequence[Path], setting: str,
             *, strict: bool) -> Path:
    """``path`` resolved, every link followed; unusable paths are refused by name."""
    try:
        return path.resolve(strict=strict)
    except (FileNotFoundError, NotADirectoryError):
        raise
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a NUL, EACCES
        raise PathOutsideRootsError(given, [str(r) for r in roots], setting,
                                    f"cannot be resolved ({exc})") from exc


def confine(path: str | Path, roots: Sequence[Path], *, setting: str) -> Path:
    """``path`` resolved (links followed), or :class:`PathOutsideRootsError` when it lies
    outside every folder of ``roots`` (no roots: every path is refused)."""
    given = str(path)
    shown_roots = [str(r) for r in roots]
    real_roots = [root.resolve() for root in roots]
    candidate = Path(given)
    try:
        resolved = _resolve(candidate, given, roots, setting, strict=True)
    except (FileNotFoundError, NotADirectoryError):
        resolved = _resolve(candidate, given, roots, setting, strict=False)
    if not any(resolved.is_relative_to(root) for root in real_roots):
        via = "" if resolved == candidate.absolute() else f" (it resolves to {resolved})"
        raise PathOutsideRootsError(given, shown_roots, setting,
                                    f"is outside the allowed folders{via}")
    return resolved


def output_path(name: str | Path, outputs_dir: Path, *,
                setting: str = "RAG_OUTPUTS_DIR") -> Path:
    """Where output ``name`` goes: ``outputs_dir / name`` (an absolute ``name`` must already
    be inside it), its folders created 0700, never through a link out of ``outputs_dir``
    and never onto a symbolic link."""
    given = str(name)

    def refuse(reason: str) -> PathOutsideRootsError:
        return PathOutsideRootsError(given, [str(outputs_dir)], setting, reason)

    outputs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = outputs_dir.resolve(strict=True)
    candidate = outputs_dir / given  # an absolute name replaces outputs_dir here
    if candidate.name in ("", ".", "..") or given.endswith(("/", os.sep)):
        raise refuse("names a folder, not a file")
    folder = _resolve(candidate.parent, given, [outputs_dir], setting, strict=False)
    if not folder.is_relative_to(base):
        raise refuse(f"is outside the outputs folder (it resolves to {folder})")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Again, now that it exists: a link created meanwhile is caught here.
    folder = _resolve(folder, given, [outputs_dir], setting, strict=True)
    if not folder.is_relative_to(base):
        raise refuse(f"is outside the outputs folder (it resolves to {folder})")
    target = folder / candidate.name
    if target.is_symlink():
        raise refuse(f"is a symbolic link (to {os.readlink(target)}); outputs are never "
                     "written through one")
    if target.exists() and not target.is_file():
        raise refuse("exists and is not a regular file")
    return target


@contextmanager
def write_private(target: Path) -> Iterator[TextIO]:
    """A text handle whose content replaces ``target`` (mode 0600) once the block ends
    without an error; on an error ``target`` is left as it was.

    The temporary file beside it is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (no link
    is followed, no existing file reused) and renamed over ``target``: a rename replaces a
    link that appeared meanwhile instead of writing through it.
    """
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
