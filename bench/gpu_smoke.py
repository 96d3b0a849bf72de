"""GPU check of the real trainer: `torchrun -m trainer.job` on a CUDA device with bf16 autocast and
channels_last (the `auto` settings), ResNet-20 on synthetic CIFAR-shaped data, IMP to 50% and
SynFlow to 90%; prints each epoch's line and the achieved sparsity. Run where a GPU is lent:

    python bench/gpu_smoke.py [--compile]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from trainer.__main__ import write_job  # noqa: E402
from trainer.config import resolve  # noqa: E402


def run(method: str, sparsity: float, compile_: bool, root: Path, size: int, epochs: int) -> None:
    cfg = resolve("cifar10_resnet20", {
        "method": method, "seed": 0, "schedule.epochs": epochs, "train.compile": compile_,
        "prune.rate": 0.5,
        "data": {"name": "synthetic", "shape": [3, 32, 32], "classes": 10, "size": size,
                 "test_size": size // 8, "batch_size": 512, "test_batch_size": 1024}})
    job_file = write_job(cfg, [sparsity], root / method)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=1", "-m", "trainer.job", str(job_file)], cwd=REPO,
                          text=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    print(proc.stdout)
    status = json.loads(job_file.with_name(job_file.stem + ".status.json").read_text())
    import torch

    last = json.loads(job_file.read_text())["levels"][-1]
    final = torch.load(root / method / "levels" / last / "final.pt", weights_only=True)
    zeros = sum(int((final["model"][k] == 0).sum()) for k in final["mask"])
    total = sum(final["mask"][k].numel() for k in final["mask"])
    print(f"{method}: {status['state']} {status.get('message') or ''}; achieved sparsity "
          f"{zeros / total:.6f} (target {sparsity})")
    if status["state"] != "COMPLETED":
        print(proc.stderr[-4000:])
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("imp", 0.5, a.compile, Path(tmp), a.size, a.epochs)
        run("synflow", 0.9, a.compile, Path(tmp), a.size, a.epochs)


if __name__ == "__main__":
    main()
