"""``python -m rag_core.cli`` runs the ``rag`` command."""

from rag_core.cli import main

main()
