"""From a spec to a plan: validate the spec (spec), expand its grid into runs and levels (grid),
group what is left to train into jobs (jobs), check the plan against the trainer (preflight);
search_spec validates a spec's `search:` block."""
