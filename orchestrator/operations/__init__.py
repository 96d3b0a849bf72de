"""What each `tp-sweep` command does, as plain functions with typed arguments and results.

A command in `cli/` parses its arguments, calls one operation here and renders what it returns;
tests of behaviour call the operations in-process. An operation opens the store it needs
(`stores`), asks `orchestrator.plan`, `.control` and `.search` for the work, and returns a
dataclass; it prints nothing. Its errors derive from `core.errors` and reach `cli.tp_sweep.main`,
which maps them to exit codes in one place.
"""
