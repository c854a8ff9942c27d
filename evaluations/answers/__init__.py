"""``rag eval answers``: answer quality of the real query path, scored with ragas."""
