"""`python -m trainer`: standalone training under hydra (see trainer/hydra_app.py).

    python -m trainer --config-name digits_mlp method=imp +sparsities=[0.5,0.8] schedule.epochs=2
    python -m trainer model=lenet data=synthetic method=snip +sparsities=[0.9]
    torchrun --nproc_per_node=2 -m trainer method=snip +sparsities=[0.9]
    python -m trainer -m hydra/launcher=submitit_local method=imp,random +sparsities=[0.5] db=sqlite:///tp.db
"""
from trainer.hydra_app import main, write_job  # noqa: F401 - write_job: tests and bench plan with it

if __name__ == "__main__":
    main()
