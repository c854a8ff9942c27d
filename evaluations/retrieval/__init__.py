"""``rag eval retrieval``: retrieval quality of the real product path on a BEIR dataset."""
