"""`python -m trainer`: standalone training under hydra (see cli/hydra_app.py).

python -m trainer --config-name digits_mlp method=imp +sparsities=[0.5,0.8] schedule.epochs=2
python -m trainer model=lenet data=synthetic method=snip +sparsities=[0.9]
torchrun --nproc_per_node=2 -m trainer method=snip +sparsities=[0.9]
python -m trainer -m hydra/launcher=submitit_local method=imp,random +sparsities=[0.5] db=sqlite:///tp.db
"""

# The one import of a layer above: `python -m trainer` is hydra's command line, which lives with
# every other command line in cli/ (the import contracts name this shim as their only exception).
from cli.hydra_app import main

if __name__ == "__main__":
    main()
