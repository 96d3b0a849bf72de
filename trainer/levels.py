"""The levels loop: for each planned density, prune, rewind, and (re)train.

    init = seeded initial weights                       (RUN_DIR/init.pt)
    for level, density in enumerate(densities):
        if the method prunes at this level:
            mask = method(model at the weights it scores, mask, density, a few batches)
        weights  = init | step-k snapshot | the last level's trained weights   (method.rewind)
        train for the level's epochs with a fresh schedule, masked weights held at zero
        record the level; keep its trained weights    (RUN_DIR/level_L/final.pt)

Every epoch ends with an atomic RUN_DIR/checkpoint.pt; a stop signal saves one mid-epoch. A job
restarted on the same RUN_DIR picks up exactly there, and its results equal an uninterrupted run's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainer import checkpoint as ckpt
from trainer.data import LoaderContext, Loaders, build_loaders
from trainer.distributed import DistInfo, StopFlag, barrier
from trainer.loop import EpochResult, StepHooks, evaluate, train_epoch
from trainer.models import build_model
from trainer.optim import build_optimizer
from trainer.pruning.masks import MaskEnforcer, achieved_sparsity, apply_mask, full_mask
from trainer.pruning.methods import PruneContext
from trainer.pruning.registry import MethodInfo, get_method

PRUNE_ORDER_KEY = 1_000_000  # data order for pruning batches, apart from any epoch's order


class Recorder(Protocol):
    def heartbeat(self, level: int, epoch: int) -> None: ...
    def log_epoch(self, level: int, epoch: int, metrics: dict[str, float]) -> None: ...
    def finish_level(self, level: int, metrics: dict[str, Any]) -> None: ...


class NullRecorder:
    def heartbeat(self, level: int, epoch: int) -> None: ...
    def log_epoch(self, level: int, epoch: int, metrics: dict[str, float]) -> None: ...
    def finish_level(self, level: int, metrics: dict[str, Any]) -> None: ...


class Stopped(Exception):
    """Raised after a stop signal was honoured and the checkpoint saved."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


@dataclass
class RunDesc:
    run_id: str
    method: str
    seed: int
    sparsities: list[float]
    densities: list[float]
    config: dict[str, Any]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunDesc":
        return cls(d["run_id"], d["method"], int(d["seed"]), list(d["sparsities"]),
                   list(d["densities"]), d["config"])


def _epoch_line(level: int, epoch: int, m: dict[str, Any]) -> str:
    test = f" test_acc {m['test_acc']:.4f}" if m.get("test_acc") is not None else ""
    return (f"[level {level} epoch {epoch}] train_loss {m['train_loss']:.4f} train_acc "
            f"{m['train_acc']:.4f}{test} lr {m['lr']:.4g} {m['images_per_s']:.0f} img/s")


def _seed_for(*parts: int) -> int:
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (2**63 - 1)
    return h


class LevelRunner:
    def __init__(self, desc: RunDesc, run_dir: Path, info: DistInfo, recorder: Recorder,
                 stop: StopFlag) -> None:
        self.desc, self.dir, self.info, self.rec, self.stop = desc, run_dir, info, recorder, stop
        self.cfg = desc.config
        self.method: MethodInfo = get_method(desc.method)
        self.train_cfg = self.cfg["train"]
        if self.train_cfg.get("deterministic") and info.device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        self.loaders: Loaders = build_loaders(self.cfg["data"], LoaderContext(
            rank=info.rank, world_size=info.world_size, seed=desc.seed, device=info.device,
            distributed=info.distributed))
        torch.manual_seed(desc.seed)  # the initial weights are a function of the seed alone
        self.model = build_model(self.cfg["model"], self.loaders.num_classes,
                                 self.loaders.input_shape).to(info.device)
        self.conv = any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        cl = self.train_cfg.get("channels_last", "auto")
        self.channels_last = self.conv and (cl is True or (cl == "auto" and info.device.type == "cuda"))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = self.train_cfg.get("precision", "auto")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.train_cfg.get("label_smoothing", 0.0))
        self.eval_loss = nn.CrossEntropyLoss()
        self.steps_per_epoch = len(self.loaders.train)
        if self.steps_per_epoch == 0:
            raise ValueError("the training set yields no full batch per rank: lower data.batch_size")
        total = self.steps_per_epoch * int(self.cfg["schedule"]["epochs"])
        if self.method.rewind == "step" and not 0 <= self._rewind_step() < total:
            raise ValueError(f"imp_wr rewind point {self._rewind_step()} is outside the level's "
                             f"{total} steps (prune.rewind_epochs / prune.rewind_iterations)")

    # ---- files ---------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.dir / name

    def _save(self, obj: Any, name: str) -> None:
        if self.info.is_main:
            ckpt.save_atomic(obj, self._path(name))

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ---- the algorithm -------------------------------------------------------------------
    def run(self) -> None:
        if not self._path("init.pt").exists():
            self._save({"model": self._weights()}, "init.pt")
        barrier(self.info)
        state = ckpt.load(self._path("checkpoint.pt")) if self._path("checkpoint.pt").exists() else None
        first = state["level"] if state else 0
        for level in range(first, len(self.desc.densities)):
            resume = state if (state and state["level"] == level and "model" in state) else None
            self._run_level(level, resume)
            state = None

    def _run_level(self, level: int, resume: dict[str, Any] | None) -> None:
        density = self.desc.densities[level]
        if resume is None:
            mask = self._prepare_level(level, density)
            opt = build_optimizer(self.model, self.cfg["optimizer"])
            start_step, best, history = 0, 0.0, []
            if self.method.rewind == "step" and level > 0:
                snap = ckpt.load(self._path("rewind.pt"), self.info.device)
                opt.load_state_dict(snap["optimizer"])
                start_step = snap["step"]
            carry = None
            self._checkpoint(level, start_step, mask, opt, best, None, history)
        else:
            mask = {k: v.to(self.info.device) for k, v in resume["mask"].items()}
            self.model.load_state_dict(resume["model"])
            opt = build_optimizer(self.model, self.cfg["optimizer"])
            opt.load_state_dict(resume["optimizer"])
            start_step, best, carry = resume["step"], resume["best"], resume["carry"]
            history = resume["history"]
            if resume.get("rng") is not None:
                torch.set_rng_state(resume["rng"])
        enforce = MaskEnforcer(self.model, mask)
        enforce()
        net = self._wrap()
        hooks = StepHooks(after_step=enforce, heartbeat=(lambda: self.rec.heartbeat(level, self._epoch))
                          if self.info.is_main else None)
        k = self._rewind_step()
        if self.method.rewind == "step" and level == 0 and not self._path("rewind.pt").exists():
            hooks.at_step[k] = lambda: self._save(
                {"model": self._weights(), "optimizer": opt.state_dict(), "step": k}, "rewind.pt")
        epochs = int(self.cfg["schedule"]["epochs"])
        first_epoch, skip = divmod(start_step, self.steps_per_epoch)
        for epoch in range(first_epoch, epochs):
            self._epoch = epoch
            if skip == 0:
                torch.manual_seed(_seed_for(self.desc.seed, level, epoch))  # dropout/augment RNG
            self.loaders.train.set_epoch(epoch)
            res = train_epoch(net, self.loaders.train, opt, info=self.info, epoch=epoch,
                              steps_per_epoch=self.steps_per_epoch,
                              base_lr=float(self.cfg["optimizer"]["lr"]), schedule=self.cfg["schedule"],
                              loss_fn=self.loss_fn, hooks=hooks, stop=self.stop,
                              precision=self.precision, channels_last=self.channels_last,
                              skip=skip, carry=carry)
            skip, carry = 0, None
            if res.stopped_at is not None:
                step = epoch * self.steps_per_epoch + res.stopped_at
                self._checkpoint(level, step, mask, opt, best, res.sums, history,
                                 rng=torch.get_rng_state())
                raise Stopped(f"level {level} epoch {epoch} step {res.stopped_at}")
            metrics = self._epoch_metrics(net, res, epoch, epochs)
            if metrics.get("test_acc") is not None:
                best = max(best, metrics["test_acc"])
            history.append(metrics)
            if self.info.is_main:
                self.rec.log_epoch(level, epoch, metrics)
                print(_epoch_line(level, epoch, metrics), flush=True)  # the job log's progress
            self._checkpoint(level, (epoch + 1) * self.steps_per_epoch, mask, opt, best, None, history)
            if self.stop.should_stop(0, force_sync=True):
                raise Stopped(f"level {level} after epoch {epoch}")
        self._finish_level(level, density, mask, history, best)

    def _prepare_level(self, level: int, density: float) -> dict[str, torch.Tensor]:
        """Choose the mask for this level and put the weights it trains from in the model."""
        keep_fl = bool(self.cfg["prune"].get("keep_first_last_dense", False))
        init = ckpt.load(self._path("init.pt"), self.info.device)["model"]
        if level == 0:
            mask = full_mask(self.model, keep_fl)
            self.model.load_state_dict(init)
        else:
            prev = ckpt.load(self._path(f"level_{level - 1}/final.pt"), self.info.device)
            mask = {k: v.to(self.info.device) for k, v in prev["mask"].items()}
            self.model.load_state_dict(prev["model"])  # iterative methods score trained weights
        prunes_now = (self.method.schedule == "oneshot" and level == 0) or \
                     (self.method.schedule == "iterative" and level > 0)
        if prunes_now:
            if self.info.is_main:
                mask = self._prune(level, mask, density)
                self._save({k: v.cpu() for k, v in mask.items()}, f"level_{level}/mask.pt")
            barrier(self.info)
            mask = {k: v.to(self.info.device) for k, v in
                    ckpt.load(self._path(f"level_{level}/mask.pt"), self.info.device).items()}
        if level > 0:
            if self.method.rewind == "init":
                self.model.load_state_dict(init)
            elif self.method.rewind == "step":
                self.model.load_state_dict(ckpt.load(self._path("rewind.pt"), self.info.device)["model"])
            # rewind == "none" (learning-rate rewinding): keep the trained weights
        apply_mask(self.model, mask)
        return mask

    def _prune(self, level: int, mask: dict[str, torch.Tensor], density: float) -> dict[str, torch.Tensor]:
        pcfg = dict(self.cfg["prune"], input_shape=tuple(self.loaders.input_shape))
        batches = None
        if self.method.needs_data or self.method.name == "synflow":
            n = int(pcfg.get("snip_batches" if self.method.name == "snip" else "prune_batches", 1))
            self.loaders.train.set_epoch(PRUNE_ORDER_KEY + level)
            batches = []
            for x, y in self.loaders.train:
                batches.append((x.clone(), y.clone()))  # FFCV reuses its buffers a few batches on
                if len(batches) >= n:
                    break
        gen = torch.Generator().manual_seed(_seed_for(self.desc.seed, 7919, level))
        ctx = PruneContext(cfg=pcfg, generator=gen, batches=batches, loss_fn=self.eval_loss)
        return self.method.load()(self.model, mask, density, ctx)

    def _rewind_step(self) -> int:
        p = self.cfg["prune"]
        if p.get("rewind_iterations") is not None:
            return int(p["rewind_iterations"])
        return int(round(float(p.get("rewind_epochs", 0)) * self.steps_per_epoch))

    def _wrap(self) -> nn.Module:
        net: nn.Module = self.model
        if self.info.distributed:
            net = DDP(net, device_ids=[self.info.local_rank] if self.info.device.type == "cuda" else None)
        if self.train_cfg.get("compile"):
            net = torch.compile(net)
        return net

    def _epoch_metrics(self, net: nn.Module, res: EpochResult, epoch: int, epochs: int) -> dict[str, Any]:
        every = max(int(self.train_cfg.get("eval_every", 1)), 1)
        metrics: dict[str, Any] = {
            "train_loss": res.loss, "train_acc": res.acc, "seconds": res.seconds,
            "images_per_s": float(res.sums[2]) / max(res.seconds, 1e-9),
            "lr": res.lr, "steps": res.steps, "test_loss": None, "test_acc": None, "test_top5": None,
        }
        if (epoch + 1) % every == 0 or epoch == epochs - 1:
            metrics.update(evaluate(net, self.loaders.test, info=self.info, loss_fn=self.eval_loss,
                                    precision=self.precision, channels_last=self.channels_last))
        return metrics

    def _checkpoint(self, level: int, step: int, mask: dict[str, torch.Tensor],
                    opt: torch.optim.Optimizer, best: float, carry: torch.Tensor | None,
                    history: list[dict[str, Any]], rng: torch.Tensor | None = None) -> None:
        self._save({"level": level, "step": step, "model": self._weights(),
                    "optimizer": opt.state_dict(), "mask": {k: v.cpu() for k, v in mask.items()},
                    "best": best, "carry": carry, "history": history, "rng": rng}, "checkpoint.pt")

    def _finish_level(self, level: int, density: float, mask: dict[str, torch.Tensor],
                      history: list[dict[str, Any]], best: float) -> None:
        if self.info.is_main:
            cpu_mask = {k: v.cpu() for k, v in mask.items()}
            self._save({"model": self._weights(), "mask": cpu_mask}, f"level_{level}/final.pt")
            last = history[-1] if history else {}
            self.rec.finish_level(level, {
                "density": density,
                "achieved_sparsity": achieved_sparsity(self.model, list(mask)),
                "test_acc": last.get("test_acc"), "test_top5": last.get("test_top5"),
                "test_loss": last.get("test_loss"), "best_test_acc": best,
                "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
                "epochs": len(history), "seconds": sum(h["seconds"] for h in history)})
            self._save({"level": level + 1}, "checkpoint.pt")  # next: set up level + 1
        barrier(self.info)
