"""Canary rollouts of feature flags: cohorts measured from the audit log, gates with
per-stage thresholds, and the moves (start, advance, pause, rollback) that follow."""
