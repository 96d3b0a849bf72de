"""Every command line of turboprune: `tp-sweep` (tp_sweep and its commands), `tp-sweep data`
(data), `python -m trainer` under hydra (hydra_app, hydra_argv), and the terminal renderers
(render/)."""
