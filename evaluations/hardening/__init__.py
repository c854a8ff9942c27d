"""Hardening evidence: bad inputs tried through the CLI, with the rows they leave behind."""
