"""Offline evaluations of the platform (runnable as ``python -m evaluations.<name>``)."""
