"""Write .beton files (fields ``image``: RGBImageField, ``label``: IntField) for the FFCV loaders.

CLI: ``tp-sweep data write --from imagefolder|cifar|digits|synthetic SRC --out FILE.beton ...``.

Policies:
- The file is written to ``OUT.partial`` and renamed onto OUT only on success; a failed or
  interrupted write never leaves a file under the target name (a stale .partial is removed).
- Corrupt or truncated images in an image folder are SKIPPED: every image is fully decoded in a
  verification pass first, the skipped ones are listed (first few) and counted in the summary. A
  folder where every image is bad, a missing folder, or a folder without images is a DataError.
- FFCV's writer processes must never raise (its progress loop would wait forever), so samples are
  read through a wrapper that records failures and substitutes a blank image; any failure there
  removes the partial file and raises DataError.
- A writer process that dies (killed for memory, say) would make FFCV wait forever; a watchdog
  notices that no writer process is left and raises DataError instead.
- ``write_mode`` is FFCV's: raw, jpg, proportion (JPEG with ``compress_probability``), or smart:
  JPEG for images larger than ``smart_threshold`` bytes raw (default 3*64*64), raw otherwise.
- Pages fit the images (``page_size_for``): FFCV writes its samples in pages, one page of padding
  before the first and a partly filled last page per writer process, so its 8 MiB default made
  digits' 1,442 train images (32x32 raw, 4.4 MB of pixels) a 25 MB file. Sources of one image
  size (digits, cifar, synthetic) and folders written with ``max_resolution`` get the smallest
  power of two that holds SAMPLES_PER_PAGE of their largest raw image, at least 64 KiB: digits
  take 4.7 MB. FFCV's writer refuses pages under 2 MiB (a hugepage-friendly default for its
  process cache, not a limit of the format: its reader takes any power of two, and the tests
  read small-page files back identically through both of its caches), so the size is set on
  the writer after it is made. A folder of any size keeps FFCV's 8 MiB.
"""

from __future__ import annotations

import _thread
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from trainer.beton_options import DEFAULT_SMART_THRESHOLD, WRITE_MODES

from . import DataError, sources

FFCV_PAGE_SIZE = 1 << 23  # DatasetWriter's default (8 MiB)
SMALLEST_PAGE = 1 << 16  # 64 KiB: a JPEG of a tiny image can outgrow its raw pixels
SAMPLES_PER_PAGE = 16  # the space a page leaves unused is under a sixteenth of it


@dataclass
class WriteSummary:
    path: str
    images: int
    classes: int
    bytes: int
    seconds: float
    skipped: int
    page_size: int = FFCV_PAGE_SIZE


def page_size_for(sample_bytes: int | None) -> int:
    """The page size for samples of at most `sample_bytes` raw bytes (None: unknown, FFCV's)."""
    if sample_bytes is None:
        return FFCV_PAGE_SIZE
    size = SMALLEST_PAGE
    while size < SAMPLES_PER_PAGE * sample_bytes and size < FFCV_PAGE_SIZE:
        size *= 2
    return size


def largest_image_bytes(source, max_resolution: int | None) -> int | None:
    """An upper bound of a sample's raw image bytes: the source's one image size (an array of
    images), else what max_resolution allows; None when neither bounds it (an image folder)."""
    images = getattr(source, "images", None)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return int(images.shape[1] * images.shape[2] * 3)
    return None if max_resolution is None else int(max_resolution) ** 2 * 3


class GuardedSamples:
    """What FFCV's writer workers index: sample ``i`` of the kept indices, never raising."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, indices
        self.done = mp.Value("q", 0)  # shared with the forked writer processes
        self.failed = mp.Value("q", -1)  # first failing source index, or -1

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        src = int(self.indices[i])
        try:
            image, label = self.source[src]
            image = np.ascontiguousarray(image, dtype=np.uint8)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image shape {image.shape}, expected HxWx3")
        except Exception:  # noqa: BLE001 - must not propagate into FFCV's worker (hang)
            with self.failed.get_lock():
                if self.failed.value < 0:
                    self.failed.value = src
            image, label = np.zeros((8, 8, 3), np.uint8), 0
        with self.done.get_lock():
            self.done.value += 1
        return image, int(label)


class _Quiet:
    """Stands in for FFCV's tqdm bar while a rich bar reports progress."""

    def __init__(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass


@contextlib.contextmanager
def _rich_progress(enabled: bool, description: str, total: int):
    """Yields advance(n); a no-op when progress is disabled."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import (  # rich (0.025 s): not for JSON or --help
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def open_source(kind: str, src: str | None, split: str, **synthetic):
    if kind == "imagefolder":
        if not src:
            raise DataError("--from imagefolder needs a folder")
        return sources.ImageFolderSource(src)
    if kind == "cifar":
        if not src:
            raise DataError("--from cifar needs the CIFAR archive (cifar-10-python.tar.gz) or its folder")
        return sources.CifarSource(src, split)
    if kind == "digits":
        return sources.digits_source(split)
    if kind == "synthetic":
        return sources.synthetic_source(split, **synthetic)
    raise DataError(f"unknown source {kind!r}; known: imagefolder, cifar, digits, synthetic")


def _fields(write_mode: str, max_resolution, jpeg_quality: int, compress_probability: float, smart_threshold: int):
    from ffcv.fields import IntField, RGBImageField  # FFCV (about 7 s)

    if write_mode not in WRITE_MODES:
        raise DataError(f"write_mode must be one of {WRITE_MODES}, got {write_mode!r}")
    if not 1 <= jpeg_quality <= 100:
        raise DataError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if max_resolution is not None and max_resolution < 1:
        raise DataError(f"max_resolution must be positive, got {max_resolution}")
    if not 0.0 <= compress_probability <= 1.0:
        raise DataError(f"compress_probability must be in [0, 1], got {compress_probability}")
    image = RGBImageField(
        write_mode=write_mode,
        max_resolution=max_resolution,
        smart_threshold=smart_threshold,
        jpeg_quality=jpeg_quality,
        compress_probability=compress_probability,
    )
    return {"image": image, "label": IntField()}


def _run_writer(
    partial: str, fields: dict, samples: GuardedSamples, num_workers: int, progress: bool, page_size: int
) -> None:
    import ffcv.writer  # FFCV (about 7 s)
    from ffcv.writer import MIN_PAGE_SIZE, DatasetWriter  # FFCV (about 7 s)

    writer = DatasetWriter(
        partial, fields, page_size=max(page_size, MIN_PAGE_SIZE), num_workers=max(1, num_workers)
    )
    writer.page_size = page_size  # below FFCV's 2 MiB floor: see the module docstring
    chunk = max(1, min(100, len(samples) // (4 * max(1, num_workers)) or 1))
    stop, died = threading.Event(), threading.Event()
    with _rich_progress(progress, f"writing {os.path.basename(partial[:-8])}", len(samples)) as adv:

        def poll():  # the writer's workers count samples in shared memory; mirror it on the bar
            seen, idle_since = 0, None
            while not stop.is_set():
                now = samples.done.value
                adv(now - seen)
                seen = now
                # FFCV waits forever for samples of a worker that died (OOM kill, os._exit):
                # when no writer process is left and samples are missing, stop the main thread.
                if now < len(samples) and not mp.active_children():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 3:
                        died.set()
                        # Again until it lands: a KeyboardInterrupt raised inside a finalizer
                        # is printed and dropped, and FFCV's loop would wait on.
                        while not stop.is_set():
                            _thread.interrupt_main()
                            stop.wait(1.0)
                        return
                else:
                    idle_since = None
                time.sleep(0.1)
            adv(samples.done.value - seen)

        # interrupt_main() calls the SIGINT handler, which a caller may have replaced (or
        # ignored): ours raises KeyboardInterrupt while the writer runs.
        handler = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        saved, ffcv.writer.tqdm = ffcv.writer.tqdm, _Quiet
        try:
            writer.from_indexed_dataset(samples, chunksize=chunk)
        except KeyboardInterrupt:
            if died.is_set():
                raise DataError(
                    f"{partial[:-8]}: a writer process died after {samples.done.value}"
                    f" of {len(samples)} samples (out of memory?)"
                ) from None
            raise
        finally:
            ffcv.writer.tqdm = saved
            stop.set()
            thread.join()
            if threading.current_thread() is threading.main_thread() and handler is not None:
                signal.signal(signal.SIGINT, handler)


def write_beton(
    kind: str,
    src: str | None,
    out: str,
    *,
    max_resolution: int | None = None,
    jpeg_quality: int = 90,
    write_mode: str = "smart",
    compress_probability: float = 0.5,
    num_workers: int = 2,
    subset: int | None = None,
    split: str = "train",
    progress: bool = True,
    smart_threshold: int = DEFAULT_SMART_THRESHOLD,
    synthetic: dict | None = None,
) -> WriteSummary:
    """Convert a source to ``out`` (see the module docstring for the policies)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be train or test, got {split!r}")
    source = open_source(kind, src, split, **(synthetic or {}))
    return write_source(
        source,
        out,
        max_resolution=max_resolution,
        jpeg_quality=jpeg_quality,
        write_mode=write_mode,
        compress_probability=compress_probability,
        num_workers=num_workers,
        subset=subset,
        progress=progress,
        smart_threshold=smart_threshold,
        name=f"{kind} {src or ''}".strip(),
    )


def write_source(
    source,
    out: str,
    *,
    max_resolution: int | None = None,
    jpeg_quality: int = 90,
    write_mode: str = "smart",
    compress_probability: float = 0.5,
    num_workers: int = 2,
    subset: int | None = None,
    progress: bool = True,
    smart_threshold: int = DEFAULT_SMART_THRESHOLD,
    name: str = "",
) -> WriteSummary:
    """Write any indexable of (HxWx3 uint8, int) with ``num_classes`` (see sources.py)."""
    t0 = time.perf_counter()
    fields = _fields(write_mode, max_resolution, jpeg_quality, compress_probability, smart_threshold)
    indices = np.arange(len(source))
    if subset:
        indices = indices[: int(subset)]
    bad: dict[int, str] = {}
    if hasattr(source, "verify"):
        # The whole folder is verified even with subset: the first N *readable* images are kept.
        with _rich_progress(progress, "verifying images", len(source)) as adv:
            bad = source.verify(num_workers, adv)
        keep = np.array([i for i in range(len(source)) if i not in bad], dtype=np.int64)
        indices = keep[: int(subset)] if subset else keep
        for i, err in list(bad.items())[:5]:
            print(f"skipping {source.samples[i][0]}: {err}", file=sys.stderr)
    if len(indices) == 0:
        raise DataError(f"{name}: no readable images ({len(bad)} corrupt)")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise DataError(f"{out_dir}: output folder does not exist")
    partial = out + ".partial"
    samples = GuardedSamples(source, indices)
    page_size = page_size_for(largest_image_bytes(source, max_resolution))
    try:
        _run_writer(partial, fields, samples, num_workers, progress, page_size)
        if samples.failed.value >= 0:
            raise DataError(f"{name}: sample {samples.failed.value} could not be read")
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return WriteSummary(
        path=out,
        images=len(indices),
        classes=int(source.num_classes),
        bytes=os.path.getsize(out),
        seconds=time.perf_counter() - t0,
        skipped=len(bad),
        page_size=page_size,
    )


def run(args) -> int:
    """Write the beton `args` (cli/data.py's write parser) ask for; 2 on a DataError."""
    src = None if args.src in (None, "-") else args.src
    synthetic = (
        {"size": args.size, "classes": args.classes, "image_size": args.image_size, "data_seed": args.data_seed}
        if args.kind == "synthetic"
        else None
    )
    try:
        s = write_beton(
            args.kind,
            src,
            args.out,
            max_resolution=args.max_resolution,
            jpeg_quality=args.jpeg_quality,
            write_mode=args.write_mode,
            compress_probability=args.compress_probability,
            num_workers=args.num_workers,
            subset=args.subset,
            split=args.split,
            progress=not args.no_progress,
            smart_threshold=args.smart_threshold,
            synthetic=synthetic,
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {s.path}: {s.images} images, {s.classes} classes, {s.bytes:,} bytes "
        f"({s.page_size >> 10} KiB pages), {s.seconds:.1f} s"
        + (f", {s.skipped} corrupt images skipped" if s.skipped else "")
    )
    return 0
