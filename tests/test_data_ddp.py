"""Two real ranks (spawned processes, gloo): shards are disjoint and cover the data set, for the
in-memory loaders and for FFCV's; in-memory ranks' chunks concatenate to the 1-process batch."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.data import DataError, LoaderContext, build_loaders

WORLD = 2
KEY = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, port: int, out_dir: str, cfgs: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        ctx = LoaderContext(rank=rank, world_size=WORLD, seed=11, distributed=True)
        result = {}
        for name, cfg in cfgs.items():
            L = build_loaders(cfg, ctx)
            L.train.set_epoch(KEY)
            result[name] = {
                "len": len(L.train),
                "train": [(x.clone(), y.clone()) for x, y in L.train],
                "test": [(x.clone(), y.clone()) for x, y in L.test],
            }
        torch.save(result, f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path, cfgs: dict) -> list[dict]:
    mp.spawn(rank_main, args=(free_port(), str(tmp_path), cfgs), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.slow
def test_in_memory_ranks_equal_one_process(tmp_path):
    cfgs = {
        "digits": {"name": "digits", "batch_size": 64, "test_batch_size": 50},
        "synthetic": {"name": "synthetic", "batch_size": 32, "size": 200, "test_size": 33},
    }
    ranks = run_ranks(tmp_path, cfgs)
    for name, cfg in cfgs.items():
        one = build_loaders(cfg, LoaderContext(seed=11))
        one.train.set_epoch(KEY)
        batches = list(one.train)
        assert all(r[name]["len"] == len(batches) for r in ranks)
        for i, (x, y) in enumerate(batches):
            assert torch.equal(torch.cat([r[name]["train"][i][0] for r in ranks]), x)
            assert torch.equal(torch.cat([r[name]["train"][i][1] for r in ranks]), y)
        full = torch.cat([x for x, _ in one.test])
        shards = [torch.cat([x for x, _ in r[name]["test"]]) for r in ranks]
        assert sum(map(len, shards)) == len(full)
        assert torch.equal(shards[0], full[0::2]) and torch.equal(shards[1], full[1::2])


@pytest.mark.slow
@pytest.mark.ffcv
def test_ffcv_ranks_see_disjoint_covering_shards(tmp_path):
    from trainer.data.sources import ArraySource, synthetic_source
    from trainer.data.write import write_source

    paths = {}
    for split, n in (("train", 256), ("val", 51)):
        src = synthetic_source("train", size=n, classes=4, image_size=16)
        paths[split] = str(tmp_path / f"{split}.beton")
        # label = index, so the labels a rank sees are the examples it read
        write_source(ArraySource(src.images, np.arange(n), n), paths[split], write_mode="raw", progress=False)
    cfg = {
        "name": "cifar10",
        "batch_size": 64,
        "test_batch_size": 16,
        "num_workers": 1,
        "train_path": paths["train"],
        "val_path": paths["val"],
    }
    with pytest.raises(DataError, match="not initialised"):
        build_loaders(cfg, LoaderContext(rank=0, world_size=2, distributed=True))
    ranks = run_ranks(tmp_path, {"ffcv": cfg})
    assert ranks[0]["ffcv"]["len"] == ranks[1]["ffcv"]["len"] == 4  # 128 per rank / 32
    train = [torch.cat([y for _, y in r["ffcv"]["train"]]).tolist() for r in ranks]
    assert not set(train[0]) & set(train[1])
    assert sorted(train[0] + train[1]) == list(range(256))
    test = [torch.cat([y for _, y in r["ffcv"]["test"]]).tolist() for r in ranks]
    assert test[0] == list(range(0, 51, 2)) and test[1] == list(range(1, 51, 2))
