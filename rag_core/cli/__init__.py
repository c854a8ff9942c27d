"""The ``rag`` command line: the product's front door.

Every command that takes ``--json`` prints exactly one JSON object as its last line of
standard output, so scripts and flows can parse it; human output goes before it.
"""

from rag_core.cli.app import app

__all__ = ["app"]
