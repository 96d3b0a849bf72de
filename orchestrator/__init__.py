"""turboprune's orchestrator: a sweep spec becomes a plan (plan/), the plan becomes recorded,
submitted and reconciled jobs (control/), and an Optuna search drives trials (search/)."""
