"""Beton writer: round trips, JPEG mode, CIFAR pickles, image folders, bad inputs, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cli.data import write_main as main
from trainer.data import DataError, LoaderContext, build_loaders
from trainer.data.fixtures import make_cifar_pickles, make_image_folder
from trainer.data.write import write_beton

pytestmark = pytest.mark.ffcv


def read_meta(path):
    """(image metadata, labels) straight from the beton, no decoding."""
    from ffcv.reader import Reader

    r = Reader(path)
    return r.metadata["f0"], np.asarray(r.metadata["f1"])


def raw_images(path, meta):
    """Raw-mode images straight from the file (data_ptr is a file offset)."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    return [
        np.array(
            mm[int(m["data_ptr"]) : int(m["data_ptr"]) + int(m["height"]) * int(m["width"]) * 3].reshape(
                int(m["height"]), int(m["width"]), 3
            )
        )
        for m in meta
    ]


def test_digits_are_written_compactly_and_read_back_identically(tmp_path):
    """Small images in small pages: FFCV's 8 MiB pages made this file 25 MB for 4.4 MB of pixels
    (1,442 images of 32x32x3 bytes, raw). Read back through both of FFCV's caches (os_cache: the
    file mapped; the process cache: page by page), in order and shuffled."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor

    from trainer.data.sources import digits_uint8

    out = str(tmp_path / "digits.beton")
    s = write_beton("digits", None, out, progress=False)  # the default mode: smart, raw at this size
    images, labels = digits_uint8("train")
    assert (s.images, s.classes, s.skipped) == (1442, 10, 0) and s.bytes == os.path.getsize(out)
    assert s.page_size == 64 << 10 and s.bytes < 1.1 * images.nbytes < 5_000_000
    for os_cache in (True, False):
        for order in (OrderOption.SEQUENTIAL, OrderOption.RANDOM):
            loader = Loader(
                out,
                batch_size=500,
                num_workers=2,
                order=order,
                os_cache=os_cache,
                drop_last=False,
                pipelines={"image": [SimpleRGBImageDecoder(), ToTensor()], "label": [IntDecoder(), ToTensor()]},
            )
            xs, ys = zip(*[(x.numpy().copy(), y.numpy().copy()) for x, y in loader])
            got = np.column_stack([np.concatenate(xs).reshape(len(images), -1), np.concatenate(ys).ravel()])
            want = np.column_stack([images.reshape(len(images), -1), labels])
            if order == OrderOption.RANDOM:  # every sample once, whatever the order
                got, want = got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])]
            assert np.array_equal(got, want), (os_cache, order)


def test_page_size_fits_the_images():
    from trainer.data.write import FFCV_PAGE_SIZE, page_size_for

    assert page_size_for(8 * 8 * 3) == 64 << 10  # at least 64 KiB
    assert page_size_for(32 * 32 * 3) == 64 << 10  # 21 digits or CIFAR images a page
    assert page_size_for(256 * 256 * 3) == 4 << 20
    assert page_size_for(None) == page_size_for(1024 * 1024 * 3) == FFCV_PAGE_SIZE  # FFCV's, at most


def test_jpeg_mode_shapes_and_label_counts(tmp_path):
    out = str(tmp_path / "syn.beton")
    s = write_beton(
        "synthetic",
        None,
        out,
        write_mode="jpg",
        jpeg_quality=80,
        progress=False,
        synthetic={"size": 60, "classes": 3, "image_size": 24},
    )
    meta, labels = read_meta(out)
    assert s.images == 60 and s.classes == 3
    assert (meta["mode"] == 0).all()  # 0 = jpg in FFCV's IMAGE_MODES
    assert (meta["height"] == 24).all() and (meta["width"] == 24).all()
    assert np.bincount(labels).tolist() == [20, 20, 20]


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_pickles_convert(tmp_path, variant):
    ref = make_cifar_pickles(str(tmp_path / variant), variant, per_batch=8, test_size=10)
    for split in ("train", "test"):
        out = str(tmp_path / f"{variant}_{split}.beton")
        s = write_beton("cifar", str(tmp_path / variant), out, split=split, write_mode="smart", progress=False)
        imgs, labels = ref[split]
        meta, got = read_meta(out)
        assert s.images == len(labels) and s.classes == (10 if variant == "cifar10" else 100)
        assert np.array_equal(got, labels)
        assert (meta["mode"] == 1).all()  # smart keeps 32x32 images raw
        assert np.array_equal(np.stack(raw_images(out, meta)), imgs)


def test_image_folder_converts_and_skips_corrupt_images(tmp_path, capsys):
    root = tmp_path / "folder"
    samples = make_image_folder(str(root), classes=3, per_class=6, size=(40, 56))
    make_image_folder(str(tmp_path / "png"), classes=1, per_class=2, fmt="PNG")
    os.rename(tmp_path / "png" / "class_000" / "img_00000.png", root / "class_001" / "extra.png")
    with open(samples[0][0], "rb") as f:  # truncate one JPEG
        data = f.read()
    with open(samples[0][0], "wb") as f:
        f.write(data[: len(data) // 3])
    out = str(tmp_path / "f.beton")
    s = write_beton("imagefolder", str(root), out, write_mode="jpg", max_resolution=32, progress=False)
    assert (s.images, s.classes, s.skipped) == (18, 3, 1)
    assert "skipping" in capsys.readouterr().err
    meta, labels = read_meta(out)
    assert np.bincount(labels).tolist() == [5, 7, 6]
    assert (np.maximum(meta["height"], meta["width"]) == 32).all()  # max side resized to 32


def test_bad_inputs(tmp_path, capsys):
    out = str(tmp_path / "x.beton")
    with pytest.raises(DataError, match="no such folder"):
        write_beton("imagefolder", str(tmp_path / "missing"), out, progress=False)
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        write_beton("imagefolder", str(tmp_path / "empty"), out, progress=False)
    bad = tmp_path / "allbad" / "c"
    bad.mkdir(parents=True)
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="no readable images"):
        write_beton("imagefolder", str(tmp_path / "allbad"), out, progress=False)
    (tmp_path / "notcifar").mkdir()
    with pytest.raises(DataError, match="CIFAR"):
        write_beton("cifar", str(tmp_path / "notcifar"), out, progress=False)
    assert main(["--from", "imagefolder", str(tmp_path / "missing"), "--out", out]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_truncated_beton_is_rejected_by_name(tmp_path):
    out = str(tmp_path / "t.beton")
    assert main(["--from", "synthetic", "-", "--out", out, "--size", "40", "--no-progress"]) == 0
    good = open(out, "rb").read()
    for cut in (10, len(good) // 2, len(good) - 5):
        bad = str(tmp_path / f"cut{cut}.beton")
        open(bad, "wb").write(good[:cut])
        with pytest.raises(DataError, match=f"cut{cut}.beton"):
            build_loaders(
                {"name": "cifar10", "batch_size": 8, "train_path": bad, "val_path": out}, LoaderContext()
            )
    with pytest.raises(DataError, match="no such .beton"):
        build_loaders(
            {"name": "cifar10", "batch_size": 8, "train_path": out + "x", "val_path": out}, LoaderContext()
        )


def test_cli_summary(tmp_path, capsys):
    out = str(tmp_path / "c.beton")
    assert (
        main(
            [
                "--from",
                "synthetic",
                "-",
                "--out",
                out,
                "--size",
                "30",
                "--classes",
                "3",
                "--write-mode",
                "raw",
                "--subset",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "20 images" in text and "3 classes" in text and "bytes (64 KiB pages)" in text


class DyingSource:
    """A source whose reads kill the writer process outright (as the OOM killer would)."""

    num_classes = 2

    def __len__(self):
        return 20

    def __getitem__(self, i):
        if i == 7:
            os._exit(1)
        return np.zeros((8, 8, 3), np.uint8), i % 2


def test_dead_writer_process_is_an_error_not_a_hang(tmp_path):
    from trainer.data.write import write_source

    out = str(tmp_path / "dead.beton")
    with pytest.raises(DataError, match="writer process died"):
        write_source(DyingSource(), out, write_mode="raw", num_workers=1, progress=False)
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_dead_writer_is_an_error_whatever_sigint_handler_the_caller_left(tmp_path):
    """The CI once hung here for 15 minutes: a test before it, in the same xdist worker, had made
    a trainer's StopFlag, whose SIGINT handler only sets a flag, and the writer's interrupt of
    its main thread went there."""
    import signal

    from trainer.data.write import write_source

    calls = []
    before = signal.signal(signal.SIGINT, lambda *_: calls.append(1))
    try:
        with pytest.raises(DataError, match="writer process died"):
            write_source(DyingSource(), str(tmp_path / "d.beton"), write_mode="raw", num_workers=1, progress=False)
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler and not calls
    finally:
        signal.signal(signal.SIGINT, before)
