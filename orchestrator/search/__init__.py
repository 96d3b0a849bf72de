"""Optuna searches: the ask/tell driver over trials (driver); the `search:` block itself is
validated with the rest of the spec (orchestrator/plan/search_spec.py)."""
