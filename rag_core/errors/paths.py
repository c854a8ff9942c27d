"""Errors about file paths named by a caller who is not the local user (a flow, the API)."""

from __future__ import annotations

from collections.abc import Sequence

from rag_core.codes import ErrorCode
from rag_core.errors.base import shown
from rag_core.errors.inputs import InputError


class PathOutsideRootsError(InputError):
    """A path leaves every folder it may be in (after ``..`` and symbolic links), or an
    output would be written through a symbolic link.

    Carries the path as given, the allowed folders and the setting that lists them, so an
    operator sees at once whether the caller erred or the setting is too narrow.
    """

    code = ErrorCode.PATH_OUTSIDE_ROOTS

    def __init__(self, path: str, roots: Sequence[str], setting: str, reason: str) -> None:
        self.path = path
        self.value = path
        self.roots = list(roots)
        self.setting = setting
        self.reason = reason
        allowed = ", ".join(self.roots) or "none configured"
        super().__init__(f"path {shown(path, 200)!r} {reason}; allowed: {allowed} ({setting})")
