"""Real-format inputs through the whole product: CIFAR pickle batches and a JPEG ImageFolder are
converted with `tp-sweep data write`, then trained through `tp-sweep launch` (FFCV loaders under
2-rank DDP), and the ImageFolder also through the torchvision fallback."""

from __future__ import annotations

import pytest

from tests.inprocess import status_json
from tests.sweeputil import tiny_spec, tp, write_spec
from trainer.data.fixtures import make_cifar_pickles, make_image_folder

pytestmark = pytest.mark.ffcv


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data_launch")
    make_cifar_pickles(str(tmp / "cifar-10-batches-py"), per_batch=40, test_size=40)
    for split, seed in (("train", 0), ("val", 1)):
        make_image_folder(str(tmp / "folder" / split), classes=4, per_class=20, size=(40, 48), seed=seed)
    for args in (
        ["--from", "cifar", str(tmp / "cifar-10-batches-py"), "--split", "train", "--out", "c_train.beton"],
        ["--from", "cifar", str(tmp / "cifar-10-batches-py"), "--split", "test", "--out", "c_test.beton"],
        [
            "--from",
            "imagefolder",
            str(tmp / "folder" / "train"),
            "--out",
            "f_train.beton",
            "--max-resolution",
            "48",
            "--write-mode",
            "jpg",
        ],
        [
            "--from",
            "imagefolder",
            str(tmp / "folder" / "val"),
            "--out",
            "f_val.beton",
            "--max-resolution",
            "48",
            "--write-mode",
            "jpg",
        ],
    ):
        proc = tp("data", "write", *args, "--no-progress", cwd=tmp, check=True)
        assert "images" in proc.stdout
    return tmp


def _launch(tmp, name: str, data: dict) -> dict:
    spec = tiny_spec(name, executor__procs_per_node=2, executor__cpus_per_task=2)
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5], "seed": [0]}
    spec["trainer"]["overrides"] = {
        "schedule.epochs": 1,
        "prune.rate": 0.5,
        "model": {"name": "lenet"},
        "data": data,
    }
    tp("launch", str(write_spec(tmp, spec)), cwd=tmp, check=True, timeout=900)
    return status_json(name, tmp)["runs"][0]


@pytest.mark.slow
def test_cifar_pickles_train_through_launch(inputs):
    run = _launch(
        inputs,
        "cifar_ffcv",
        {
            "name": "cifar10",
            "train_path": str(inputs / "c_train.beton"),
            "val_path": str(inputs / "c_test.beton"),
            "batch_size": 40,
            "num_workers": 1,
        },
    )
    assert run["state"] == "COMPLETED" and run["level"] == 2, run


@pytest.mark.slow
def test_image_folder_beton_trains_through_launch(inputs):
    run = _launch(
        inputs,
        "folder_ffcv",
        {
            "name": "beton",
            "train_path": str(inputs / "f_train.beton"),
            "val_path": str(inputs / "f_val.beton"),
            "batch_size": 16,
            "resolution": 32,
            "num_workers": 1,
        },
    )
    assert run["state"] == "COMPLETED" and run["level"] == 2, run


@pytest.mark.slow
def test_image_folder_fallback_trains_through_launch(inputs):
    run = _launch(
        inputs,
        "folder_tv",
        {
            "name": "imagefolder",
            "root": str(inputs / "folder"),
            "batch_size": 16,
            "resolution": 32,
            "num_workers": 0,
        },
    )
    assert run["state"] == "COMPLETED" and run["level"] == 2, run
