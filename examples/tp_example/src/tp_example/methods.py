"""The declarations of this package's pruning methods: plain dicts, free of torch, so that
planning a sweep never imports the criterion (turboprune's core/method_decl.py has the schema)."""

TAYLOR = {
    "name": "taylor",
    "schedule": "iterative",  # prune prune.rate of what is left per level, as IMP does
    "rewind": "init",  # and rewind to the initial weights (lottery tickets)
    "score": "tp_example.criteria:taylor_score",
    "scope": "global",
    "reads_data": True,
    "batches": 2,  # the score's gradient is summed over this many training batches
}

TAYLOR_ONESHOT = {**TAYLOR, "name": "taylor_oneshot", "schedule": "oneshot"}
