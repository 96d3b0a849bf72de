"""cifar10/cifar100 with data.loader: device: CIFAR's own archives read safely, batches that are a
function of (seed, epoch) alone (so a resumed level and W ranks see what one uninterrupted process
sees), and ids that change only for levels that use it."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from core import config as trainer_config
from core.config import ConfigError
from core.levels import plan_levels, run_id
from core.schema import validate_config
from trainer.data import DataError, LoaderContext, build_loaders
from trainer.data.cifar_device import PAD, epoch_draws
from trainer.data.cifar_files import read_cifar
from trainer.data.fixtures import make_cifar_pickles
from trainer.data.sources import CifarSource


def _tar(folder: str, out: str) -> str:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder, arcname=os.path.basename(folder))
    return out


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """CIFAR-10 in its own format, as downloaded: 64 images per batch file, tarred."""
    d = tmp_path_factory.mktemp("cifar")
    ref = make_cifar_pickles(str(d / "cifar-10-batches-py"), per_batch=64, test_size=40, seed=3)
    archive = _tar(str(d / "cifar-10-batches-py"), str(d / "cifar-10-python.tar.gz"))
    return d, archive, ref


def cfg_for(root: str, **over) -> dict:
    return {"name": "cifar10", "loader": "device", "root": root, "batch_size": 32, "test_batch_size": 16, **over}


def batches(loader, key: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(key)
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_archive_folder_and_parent_read_the_same(cifar):
    d, archive, ref = cifar
    for path in (archive, str(d / "cifar-10-batches-py"), str(d)):
        a = read_cifar(path, "cifar10")
        assert a.variant == "cifar10" and a.train_x.shape == (320, 3, 32, 32) and a.test_x.shape == (40, 3, 32, 32)
        assert np.array_equal(a.train_x.transpose(0, 2, 3, 1), ref["train"][0])
        assert np.array_equal(a.train_y, ref["train"][1]) and np.array_equal(a.test_y, ref["test"][1])
    # the beton writer reads archives too, through the same safe reader
    src = CifarSource(archive, "test")
    assert len(src) == 40 and np.array_equal(src[3][0], ref["test"][0][3])


def test_cifar100_layout(tmp_path):
    ref = make_cifar_pickles(str(tmp_path / "cifar-100-python"), "cifar100", per_batch=8, test_size=10)
    archive = _tar(str(tmp_path / "cifar-100-python"), str(tmp_path / "c100.tar.gz"))
    a = read_cifar(archive, "cifar100")
    assert a.num_classes == 100 and np.array_equal(a.train_y, ref["train"][1])
    L = build_loaders({**cfg_for(archive), "name": "cifar100", "batch_size": 8}, LoaderContext())
    assert L.num_classes == 100 and L.train_size == 40
    with pytest.raises(DataError, match="a CIFAR-100 archive, but the data set is CIFAR-10"):
        read_cifar(archive, "cifar10")


def test_batches_shapes_and_normalisation(cifar):
    _, archive, ref = cifar
    L = build_loaders(cfg_for(archive), LoaderContext(seed=1))
    assert (L.num_classes, L.input_shape, L.train_size, len(L.train), len(L.test)) == (10, (3, 32, 32), 320, 10, 3)
    x, y = next(iter(L.train))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    # the test set is normalised only, in order
    tx = torch.cat([b for b, _ in L.test])
    mean = torch.tensor([125.307, 122.961, 113.8575]).view(1, 3, 1, 1)
    std = torch.tensor([51.5865, 50.847, 51.255]).view(1, 3, 1, 1)
    want = (torch.from_numpy(ref["test"][0]).permute(0, 3, 1, 2).float() - mean) / std
    assert torch.allclose(tx, want, atol=1e-5)


def test_augmentation_is_flip_and_reflect_translate(cifar):
    """Every train image is its source image, flipped or not, shifted by at most PAD with
    reflection: checked against numpy's own reflect padding, example by example."""
    _, archive, ref = cifar
    L = build_loaders(cfg_for(archive, mean=[0.0] * 3, std=[1.0] * 3), LoaderContext(seed=2))
    perm, flip, dx, dy = epoch_draws(320, 2, 4)
    got = torch.cat([x for x, _ in batches(L.train, 4)])
    src = ref["train"][0]  # NHWC
    assert bool(flip.any()) and not bool(flip.all()) and int(dx.max()) <= 2 * PAD
    for p in range(0, len(got), 7):
        img = src[int(perm[p])]
        if flip[p]:
            img = img[:, ::-1]
        padded = np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
        crop = padded[int(dy[p]) : int(dy[p]) + 32, int(dx[p]) : int(dx[p]) + 32]
        assert np.array_equal(got[p].permute(1, 2, 0).numpy(), crop.astype(np.float32)), p


def test_deterministic_per_seed_and_epoch_and_resumable(cifar):
    _, archive, _ = cifar
    a = build_loaders(cfg_for(archive), LoaderContext(seed=7))
    b = build_loaders(cfg_for(archive), LoaderContext(seed=7))
    fresh = batches(a.train, 3)
    assert same(fresh, batches(b.train, 3))
    # a resumed level: epoch 3 after iterating epochs 0-2 (and a pruning pass) is epoch 3 fresh
    for key in (0, 1, 2, 1_000_001):
        batches(b.train, key)
    assert same(batches(b.train, 3), fresh)
    # without set_epoch, the next pass is the next key's
    b.train.set_epoch(2)
    list(b.train)
    assert same([(x.clone(), y.clone()) for x, y in b.train], fresh)
    assert not same(batches(a.train, 4), fresh)
    other = build_loaders(cfg_for(archive), LoaderContext(seed=8))
    assert not same(batches(other.train, 3), fresh)


def test_two_ranks_see_the_global_batch(cifar):
    _, archive, _ = cifar
    one = build_loaders(cfg_for(archive), LoaderContext(seed=5))
    ranks = [build_loaders(cfg_for(archive), LoaderContext(rank=r, world_size=2, seed=5)) for r in range(2)]
    full = batches(one.train, 6)
    parts = [batches(r.train, 6) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == len(full)
    for i, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
    shards = [torch.cat([y for _, y in r.test]) for r in ranks]
    whole = torch.cat([y for _, y in one.test])
    assert torch.equal(shards[0], whole[0::2]) and torch.equal(shards[1], whole[1::2])


# ---- bad archives -------------------------------------------------------------------------------
class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _rewrite(folder, name: str, obj) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.mark.parametrize(
    "damage, match",
    [
        ("missing", r"data_batch_3: missing CIFAR batch file"),
        ("evil", r"data_batch_2: not a readable CIFAR batch \(UnpicklingError: refuses global posix.system"),
        ("list", r"test_batch: not a CIFAR batch \(a pickled list, not a dict\)"),
        ("nolabels", r"data_batch_1: not a CIFAR batch \(no 'labels' key\)"),
        ("shape", r"data_batch_4: 'data' is a uint8 array of shape \(64, 1024\), expected N x 3072"),
        ("count", r"data_batch_5: 64 images but 'labels' has shape \(63,\)"),
        ("range", r"data_batch_1: labels outside 0..9"),
        ("garbage", r"data_batch_2: not a readable CIFAR batch"),
    ],
)
def test_bad_batches_name_the_file_and_the_reason(tmp_path, damage, match):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar_pickles(str(folder), per_batch=64, test_size=8)
    rows = np.zeros((64, 3072), np.uint8)
    labels = list(range(10)) * 6 + [0] * 4
    if damage == "missing":
        os.remove(folder / "data_batch_3")
    elif damage == "evil":
        _rewrite(folder, "data_batch_2", {b"data": rows, b"labels": labels, b"x": Evil()})
    elif damage == "list":
        _rewrite(folder, "test_batch", [rows, labels])
    elif damage == "nolabels":
        _rewrite(folder, "data_batch_1", {b"data": rows})
    elif damage == "shape":
        _rewrite(folder, "data_batch_4", {b"data": rows[:, :1024], b"labels": labels})
    elif damage == "count":
        _rewrite(folder, "data_batch_5", {b"data": rows, b"labels": labels[:63]})
    elif damage == "range":
        _rewrite(folder, "data_batch_1", {b"data": rows, b"labels": [10] * 64})
    else:
        (folder / "data_batch_2").write_bytes(b"\x80\x02not a pickle at all")
    for path in (str(folder), _tar(str(folder), str(tmp_path / "c.tar.gz"))):
        with pytest.raises(DataError, match=match):
            build_loaders(cfg_for(path), LoaderContext())


def test_truncated_or_foreign_archive(cifar, tmp_path):
    _, archive, _ = cifar
    data = open(archive, "rb").read()
    cut = tmp_path / "cifar-10-python.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{cut}: (not a readable CIFAR archive|truncated|missing CIFAR batch)"):
        read_cifar(str(cut), "cifar10")
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tf:
        info = tarfile.TarInfo("readme.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(DataError, match="holds no CIFAR-10 or CIFAR-100 batches"):
        read_cifar(str(other), "cifar10")
    with pytest.raises(DataError, match="no such file or folder"):
        read_cifar(str(tmp_path / "nowhere"), "cifar10")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no CIFAR batches here"):
        read_cifar(str(tmp_path / "empty"), "cifar10")


# ---- config and ids ----------------------------------------------------------------------------
def test_loader_ffcv_is_the_old_id_device_a_new_one():
    base = trainer_config.resolve("cifar10_resnet20", {"method": "imp", "seed": 0})
    ids = {}
    for loader in (None, "absent", "ffcv", "device"):
        cfg = trainer_config.resolve("cifar10_resnet20", {"method": "imp", "seed": 0})
        if loader != "absent":
            cfg["data"]["loader"] = loader
        validate_config(cfg)
        ids[loader] = (run_id(cfg), [lv.level_id for lv in plan_levels("imp", cfg, [0.5]).levels])
    old = (run_id(base), [lv.level_id for lv in plan_levels("imp", base, [0.5]).levels])
    assert ids[None] == ids["ffcv"] == ids["absent"] == old
    assert ids["device"][0] != ids["absent"][0] and not set(ids["device"][1]) & set(ids["absent"][1])
    # what the trainer gets: no loader key for ffcv, device spelled out
    cfg = {**base, "data": {**base["data"], "loader": "ffcv"}}
    assert "loader" not in plan_levels("imp", cfg, [0.5]).levels[0].train["data"]


def test_loader_config_checks():
    cfg = trainer_config.resolve("digits_mlp")
    cfg["data"]["loader"] = "device"
    with pytest.raises(ConfigError, match="data.loader: device is for cifar10 and cifar100"):
        validate_config(cfg)
    cfg = trainer_config.resolve("cifar10_resnet20", {"data.root": "/x"})
    with pytest.raises(ConfigError, match="data.root: read by cifar10's device loader only"):
        validate_config(cfg)
    cfg["data"]["loader"] = "gpu"
    with pytest.raises(ConfigError, match="data.loader: 'gpu' is not one of ffcv, device"):
        validate_config(cfg)


# ---- through the product -------------------------------------------------------------------------
@pytest.mark.slow
def test_launch_refuses_a_bad_archive_then_trains_a_good_one(cifar, tmp_path):
    from tests.inprocess import status_json
    from tests.sweeputil import tiny_spec, tp, write_spec

    _, archive, _ = cifar
    data = open(archive, "rb").read()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])

    def spec(root: str) -> dict:
        s = tiny_spec("dev")
        s["grid"] = {"method": ["imp"], "sparsity": [0.5], "seed": [0]}
        s["trainer"]["overrides"] = {
            "schedule.epochs": 1,
            "prune.rate": 0.5,
            "model": {"name": "lenet"},
            "data": {"name": "cifar10", "loader": "device", "root": root, "batch_size": 64, "test_batch_size": 40},
        }
        return s

    proc = tp("launch", str(write_spec(tmp_path, spec(str(cut)))), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"data.root: {cut}: not a readable CIFAR archive" in proc.stderr.replace("\n", "")
    assert not (tmp_path / "tp-runs" / "levels").exists()  # nothing planned on disk, nothing submitted
    tp("launch", str(write_spec(tmp_path, spec(archive))), cwd=tmp_path, check=True)
    run = status_json("dev", tmp_path)["runs"][0]
    assert run["state"] == "COMPLETED", run


@pytest.mark.slow
def test_two_real_ranks_see_the_global_batch(cifar, tmp_path):
    from tests.test_data_ddp import KEY, run_ranks

    _, archive, _ = cifar
    cfg = cfg_for(archive)
    ranks = run_ranks(tmp_path, {"dev": cfg})
    one = build_loaders(cfg, LoaderContext(seed=11))
    full = batches(one.train, KEY)
    assert all(r["dev"]["len"] == len(full) for r in ranks)
    for i, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([r["dev"]["train"][i][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r["dev"]["train"][i][1] for r in ranks]), y)


@pytest.mark.slow
@pytest.mark.ffcv
def test_betons_are_decoded_once_through_ffcv(cifar, tmp_path):
    from trainer.data.write import write_beton

    d, archive, ref = cifar
    paths = {}
    for split in ("train", "test"):
        paths[split] = str(tmp_path / f"{split}.beton")
        write_beton("cifar", archive, paths[split], split=split, write_mode="raw", progress=False, num_workers=1)
    cfg = {**cfg_for(""), "root": None, "train_path": paths["train"], "val_path": paths["test"], "num_workers": 1}
    from_beton = build_loaders(cfg, LoaderContext(seed=4))
    from_archive = build_loaders(cfg_for(archive), LoaderContext(seed=4))
    assert same(batches(from_beton.train, 2), batches(from_archive.train, 2))
    assert same(list(from_beton.test), list(from_archive.test))
