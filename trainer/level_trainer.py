"""The levels loop: train each level of a job, in order, once.

    for level in job's levels (parents first):
        if LEVEL_DIR/metrics.json exists: report it, next          (trained before, anywhere)
        if the level prunes:
            mask = criterion(weights it scores, parent's mask, density, a few batches)
        weights = init | step-k snapshot of level 0 | parent's trained weights   (step.rewind)
        train for the schedule's epochs, masked weights held at zero
        LEVEL_DIR/{final.pt, metrics.json}

A level lives in LEVEL_DIR = LEVELS/<level id>/ (level.json written at plan time). Every epoch
ends with an atomic LEVEL_DIR/checkpoint.pt and a stop signal saves one mid-epoch, so a job
restarted on the same levels picks up exactly there, with results equal to an uninterrupted run.
An epoch's checkpoint is a host copy of the state written by a background thread while the next
epoch trains; a stop, the level's end and the next checkpoint wait for it, so what a killed job
finds is the last complete one (the write is atomic).
Everything random in a level is seeded by the level itself (its seed, depth, epoch and id), never
by what the process did before, so a level computes the same thing in any job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from core.layout import DIGEST_KEY, BadLevel, LevelDir, LevelLock, is_level_id
from core.levels import LevelSpec, code_free_id, data_of, model_of
from core.methods import criterion_of
from trainer import checkpoint as ckpt
from trainer.data import LoaderContext, Loaders, build_loaders
from trainer.distributed import DistInfo, StopFlag, average, barrier, rank0_says, sync_batchnorm
from trainer.loop import EpochResult, StepHooks, evaluate, train_epoch
from trainer.models import build_model
from trainer.optim import build_optimizer
from trainer.provenance import Provenance
from trainer.pruning.cost import level_cost
from trainer.pruning.masks import MaskEnforcer, achieved_sparsity, apply_mask, full_mask
from trainer.pruning.methods import PruneContext
from trainer.pruning.registry import pruner_for_step

PRUNE_ORDER_KEY = 1_000_000  # data order for pruning batches, apart from any epoch's order


class Recorder(Protocol):
    """What the trainer tells the outside world (the store; W&B) about its levels."""

    def heartbeat(self, level_id: str, epoch: int) -> None: ...
    def log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any]) -> None: ...
    def finish_level(self, level_id: str, result: dict[str, Any]) -> None: ...


class NullRecorder:
    def heartbeat(self, level_id: str, epoch: int) -> None: ...
    def log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any]) -> None: ...
    def finish_level(self, level_id: str, result: dict[str, Any]) -> None: ...


class Stopped(Exception):
    """Raised after a stop signal was honoured and the checkpoint saved. `progress` says where, as
    the job wrapper and the supervisor read it: the level, the epochs done of how many, and the
    steps its checkpoint holds (a time-limited job that saved more steps than its last slice made
    progress, orchestrator/control/policy.py)."""

    def __init__(self, where: str, progress: dict[str, Any] | None = None) -> None:
        super().__init__(where)
        self.where = where
        self.progress = progress or {}


def _slowed(after_step: Any, pause_s: float) -> Any:
    """TP_STEP_SLEEP_S (tests only): every step takes this much longer, so a level outlasts a
    Slurm time limit without the CPU time that training that long would cost (and that its
    uninterrupted reference would cost again). Sleeping changes no number."""
    if pause_s <= 0:
        return after_step

    def step() -> None:
        after_step()
        time.sleep(pause_s)

    return step


class _StopAt:
    """A stop flag that fires at a fixed step on every rank alike (no collective needed)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def should_stop(self, step: int, force_sync: bool = False) -> bool:
        return step >= self.step


def _epoch_line(level: LevelSpec, epoch: int, m: dict[str, Any]) -> str:
    test = f" test_acc {m['test_acc']:.4f}" if m.get("test_acc") is not None else ""
    return (
        f"[level {level.level_id} {level.kind} {level.depth} epoch {epoch}] train_loss "
        f"{m['train_loss']:.4f} train_acc {m['train_acc']:.4f}{test} lr {m['lr']:.4g} "
        f"{m['images_per_s']:.0f} img/s"
    )


def _seed_for(*parts: int) -> int:
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (2**63 - 1)
    return h


def rewind_step(rewind_to: dict[str, Any], steps_per_epoch: int) -> int:
    if "iterations" in rewind_to:
        return int(rewind_to["iterations"])
    return int(round(float(rewind_to.get("epochs", 0)) * steps_per_epoch))


class LevelTrainer:
    """Trains levels that share one training config (one job's levels always do)."""

    def __init__(
        self,
        train: dict[str, Any],
        levels_dir: Path,
        info: DistInfo,
        recorder: Recorder,
        stop: StopFlag,
        reuse: str = "any",
    ) -> None:
        self.train, self.levels_dir, self.info, self.rec, self.stop = train, levels_dir, info, recorder, stop
        self.reuse = reuse  # same-code: a checkpoint started by other code is not continued
        self.seed = int(train.get("seed", 0))
        self.opts = train.get("train", {})
        if self.opts.get("deterministic") and info.device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        elif info.device.type == "cuda" and not self.opts.get("deterministic"):
            torch.backends.cudnn.benchmark = True  # pick the fastest conv kernels for the fixed shapes
        self.loaders: Loaders = build_loaders(
            train["data"],
            LoaderContext(
                rank=info.rank,
                world_size=info.world_size,
                seed=self.seed,
                device=info.device,
                distributed=info.distributed,
            ),
        )
        torch.manual_seed(self.seed)  # the initial weights are a function of the seed alone
        model = build_model(train["model"], self.loaders.num_classes, self.loaders.input_shape)
        # BatchNorm over the global batch: the world size is in no id, so it must not matter.
        self.model = sync_batchnorm(model.to(info.device), info)
        self.init_weights = self._weights()
        conv = any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        cl = self.opts.get("channels_last", "auto")
        self.channels_last = conv and (cl is True or (cl == "auto" and info.device.type == "cuda"))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = self.opts.get("precision", "auto")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.opts.get("label_smoothing", 0.0))
        self.eval_loss = nn.CrossEntropyLoss()
        self.steps_per_epoch = len(self.loaders.train)
        if self.steps_per_epoch == 0:
            raise ValueError("the training set yields no full batch per rank: lower data.batch_size")
        self.epochs = int(train["schedule"]["epochs"])
        self._epoch = 0
        # the code this process runs, the libraries, the data files, the hosts
        self.provenance = Provenance(info, data=train["data"])
        self._attempts: list[dict[str, Any]] = []
        self._writer = ckpt.BackgroundWriter()  # epoch checkpoints, written while the next epoch trains

    # ---- files ---------------------------------------------------------------------------
    def dir(self, level_id: str) -> LevelDir:
        return LevelDir(self.levels_dir / level_id)

    def _save(self, obj: Any, path: Path) -> None:
        if self.info.is_main:
            ckpt.save_atomic(obj, path)

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _init(self, level: LevelSpec) -> dict[str, torch.Tensor]:
        """The root's initial weights (init.pt, written the first time a level of the root's
        tree needs it: usually the root itself, but a random method's branch may train while
        its level 0 never does). A function of the seed alone, so any job writes the same."""
        path = self.dir(level.root).init
        if not rank0_says(self.info, path.exists()):
            if self.info.is_main:
                self._save({"model": self.init_weights}, path)
            barrier(self.info)
        return ckpt.load_weights(path, self.info.device)["model"]

    @staticmethod
    def needs_trained_parent(level: LevelSpec) -> bool:
        """Whether a level starts from its parent's trained weights: to score them (magnitude,
        SNIP, SynFlow) or to keep them (learning-rate rewinding). A random criterion that
        rewinds to init needs only its parent's mask, which can be computed untrained."""
        if level.parent is None or level.step is None:
            return False
        return criterion_of(level.step).reads_weights or level.step.get("rewind") == "none"

    def parent_must_be_trained(self, level: LevelSpec) -> bool:
        """Whether the parent must be finished before this level starts: it needs the parent's
        weights, or the parent's mask needs the parent's own training (a control below IMP)."""
        if level.parent is None:
            return False
        if self.needs_trained_parent(level):
            return True
        parent = read_level(self.levels_dir, level.parent)
        return parent.step is not None and (
            criterion_of(parent.step).reads_weights or parent.step.get("rewind") == "none"
        )

    def _mask_of(self, level_id: str) -> dict[str, torch.Tensor]:
        """A level's mask (rank 0): a trained level's from its final.pt; an untrained one's (a
        mask-only trunk level of a random method) drawn again down its chain from level 0, with
        the same seeds, so it is the mask that level would have trained under, and written to its
        mask.pt on the way (never read back: a file nobody trained beside is not trusted)."""
        d = self.dir(level_id)
        if d.final.exists() and d.inspect().result is not None:
            return ckpt.load_weights(d.final, self.info.device)["mask"]
        spec = read_level(self.levels_dir, level_id)
        if spec.step is None:  # level 0: dense training keeps every conv and linear weight
            return full_mask(self.model)
        if criterion_of(spec.step).reads_weights or spec.step.get("rewind") == "none":
            raise RuntimeError(f"level {level_id} is not trained yet, and its mask needs its weights")
        mask = full_mask(
            self.model,
            bool(spec.step.get("keep_first_last_dense", False)),
            spec.step.get("layers_to_ignore") or (),
        )
        if spec.parent is not None:
            parent = self._mask_of(spec.parent)
            mask = {k: parent[k].to(self.info.device) if k in parent else m for k, m in mask.items()}
        mask = self._prune(spec, mask)
        self._save({"mask": {k: v.cpu() for k, v in mask.items()}}, d.mask)
        return mask

    # ---- the algorithm -------------------------------------------------------------------
    def run(self, levels: list[LevelSpec], snapshots: dict[str, list[dict[str, Any]]]) -> None:
        for level in levels:
            self.run_level(level, snapshots.get(level.level_id, []))

    def check_code(self, level: LevelSpec) -> None:
        """Under reuse same-code a level's id holds the code it must be trained by: refuse to
        train it with any other (a checkout edited under a job that does not run from its
        snapshot, or a job file from another launch)."""
        if level.code is None:
            return
        mine = self.provenance.code.for_step(level.step, model_of(level.train), data_of(level.train))
        if mine != level.code:
            raise RuntimeError(
                f"level {level.level_id} is defined for code {level.code}, but this trainer runs code "
                f"{mine} (from {self.provenance.code.root}): the code changed since the level was "
                "planned; launch again to plan levels for this code"
            )

    def run_level(self, level: LevelSpec, snapshots: list[dict[str, Any]] = ()) -> None:
        d = self.dir(level.level_id)
        if self._report_if_done(level, d):
            return
        self.check_code(level)
        if self.parent_must_be_trained(level):
            parent = self.dir(level.parent).inspect() if self.info.is_main else None
            problem = (
                parent.problem or ("not trained yet" if parent.result is None else None)
                if parent is not None
                else None
            )
            if rank0_says(self.info, problem is not None):
                raise RuntimeError(
                    f"level {level.level_id} continues from level {level.parent}: "
                    f"{problem or 'see rank 0'}; the job that trains it must finish "
                    "first (a bad folder: move it aside and launch again)"
                )
        with LevelLock(
            d,
            self.info.is_main,
            agree=lambda ok: rank0_says(self.info, ok),
            on_wait=lambda: self.rec.heartbeat(level.level_id, 0),
        ):
            if self._report_if_done(level, d):  # trained by another job while we waited
                return
            try:
                self._train_level(level, d, snapshots)
            finally:  # a failed level too: no write outlives it, and a write's error is raised
                self._writer.wait()

    def _report_if_done(self, level: LevelSpec, d: LevelDir) -> bool:
        check = d.inspect() if self.info.is_main else None
        if rank0_says(self.info, check is not None and check.problem is not None):
            # never trained over: a folder that fails its checks is left for someone to look at
            raise RuntimeError(
                f"level {level.level_id}: {check.problem if check else 'see rank 0'} "
                f"({d.path}); move the folder aside and launch again to retrain it"
            )
        result = check.result if check is not None else None
        if not rank0_says(self.info, result is not None):  # every rank follows rank 0's view
            return False
        if result is not None:
            self.rec.finish_level(level.level_id, result)
        return True

    def _train_level(self, level: LevelSpec, d: LevelDir, snapshots: list[dict[str, Any]]) -> None:
        state = ckpt.load_checkpoint(d.checkpoint, self.info.device) if d.checkpoint.exists() else None
        if state is not None and self.reuse == "same-code":
            mine = self.provenance.code.for_step(level.step, model_of(level.train), data_of(level.train))
            theirs = {a.get("code") for a in state.get("trained_by") or [{}]}
            if theirs != {mine}:  # started by other (or unrecorded) code: start over, keep the file
                if self.info.is_main:
                    print(
                        f"[trainer] level {level.level_id}: its checkpoint was started by code "
                        f"{', '.join(sorted(str(c) for c in theirs))}, not {mine}; reuse same-code: "
                        "training it from its start",
                        flush=True,
                    )
                    d.checkpoint.rename(d.path / f"checkpoint.other-code.{sorted(map(str, theirs))[0]}.pt")
                barrier(self.info)
                state = None
        # Every attempt that trains part of the level is kept with its code and hosts: a level
        # stopped under one code and finished under another says so in its provenance.
        me = self.provenance.attempt(level.step, model_of(level.train), data_of(level.train))
        self._attempts = list(state.get("trained_by") or []) if state is not None else []
        if not self._attempts or self._attempts[-1] != me:
            self._attempts.append(me)
        if state is None:
            mask, opt, start_step = self._prepare(level, d)
            best, history, carry = 0.0, [], None
            self._checkpoint(d, start_step, mask, opt, best, None, history)
        else:
            mask = {k: v.to(self.info.device) for k, v in state["mask"].items()}
            self.model.load_state_dict(state["model"])
            opt = build_optimizer(self.model, self.train["optimizer"])
            opt.load_state_dict(state["optimizer"])
            start_step, best, carry = state["step"], state["best"], state["carry"]
            history = state["history"]
            if state.get("rng") is not None:
                torch.set_rng_state(state["rng"])
        enforce = MaskEnforcer(self.model, mask)
        enforce()
        net = self._wrap()
        hooks = StepHooks(
            after_step=_slowed(enforce, float(os.environ.get("TP_STEP_SLEEP_S") or 0)),
            heartbeat=(lambda: self.rec.heartbeat(level.level_id, self._epoch)) if self.info.is_main else None,
        )
        if level.parent is None and level.step is None:  # level 0 writes the imp_wr rewind points
            for rewind_to in snapshots:
                k = rewind_step(rewind_to, self.steps_per_epoch)
                if not d.snapshot(k).exists():
                    hooks.at_step[k] = self._snapshot_hook(d, k, opt)
        first_epoch, skip = divmod(start_step, self.steps_per_epoch)
        for epoch in range(first_epoch, self.epochs):
            self._epoch = epoch
            res = self._epoch_pass(net, level, opt, epoch, hooks, self.stop, skip, carry)
            skip, carry = 0, None
            if res.stopped_at is not None:
                step = epoch * self.steps_per_epoch + res.stopped_at
                self._checkpoint(d, step, mask, opt, best, res.sums, history, rng=torch.get_rng_state(), wait=True)
                raise Stopped(
                    f"level {level.level_id} ({level.kind} {level.depth}) epoch {epoch} step {res.stopped_at}",
                    {"level_id": level.level_id, "epoch": epoch, "epochs": self.epochs, "step": step},
                )
            metrics = self._epoch_metrics(net, res, epoch)
            if metrics.get("test_acc") is not None:
                best = max(best, metrics["test_acc"])
            history.append({"epoch": epoch, **metrics})
            if self.info.is_main:
                self.rec.log_epoch(level.level_id, epoch, metrics)
                print(_epoch_line(level, epoch, metrics), flush=True)  # the job log's progress
            self._checkpoint(d, (epoch + 1) * self.steps_per_epoch, mask, opt, best, None, history)
            if self.stop.should_stop(0, force_sync=True):
                self._writer.wait()  # the checkpoint the job resumes from is on disk
                raise Stopped(
                    f"level {level.level_id} ({level.kind} {level.depth}) after epoch {epoch}",
                    {
                        "level_id": level.level_id,
                        "epoch": epoch + 1,
                        "epochs": self.epochs,
                        "step": (epoch + 1) * self.steps_per_epoch,
                    },
                )
        self._finish(level, d, mask, history, best)

    def _epoch_pass(
        self,
        net: nn.Module,
        level: LevelSpec,
        opt: torch.optim.Optimizer,
        epoch: int,
        hooks: StepHooks,
        stop: Any,
        skip: int = 0,
        carry: torch.Tensor | None = None,
    ) -> EpochResult:
        if skip == 0:
            torch.manual_seed(_seed_for(self.seed, level.depth, epoch))  # dropout/augment RNG
        self.loaders.train.set_epoch(epoch)
        return train_epoch(
            net,
            self.loaders.train,
            opt,
            info=self.info,
            epoch=epoch,
            steps_per_epoch=self.steps_per_epoch,
            base_lr=float(self.train["optimizer"]["lr"]),
            schedule=self.train["schedule"],
            loss_fn=self.loss_fn,
            hooks=hooks,
            stop=stop,
            precision=self.precision,
            channels_last=self.channels_last,
            skip=skip,
            carry=carry,
        )

    def _snapshot_hook(self, d: LevelDir, k: int, opt: torch.optim.Optimizer):
        return lambda: self._save(
            {"model": self._weights(), "optimizer": opt.state_dict(), "step": k}, d.snapshot(k)
        )

    def _prepare(self, level: LevelSpec, d: LevelDir):
        """Choose the level's mask, put its starting weights in the model; returns (mask, optimizer,
        first step)."""
        init = self._init(level)
        step = level.step
        if step is None:  # dense training from init
            self.model.load_state_dict(init)
            mask = full_mask(self.model)
        else:
            mask = full_mask(
                self.model, bool(step.get("keep_first_last_dense", False)), step.get("layers_to_ignore") or ()
            )
            if level.parent is None:  # one-shot: score the initial weights
                self.model.load_state_dict(init)
            elif self.needs_trained_parent(level):  # score the parent's trained weights, in its mask
                parent = ckpt.load_weights(self.dir(level.parent).final, self.info.device)
                self.model.load_state_dict(parent["model"])
                mask = {
                    k: parent["mask"][k].to(self.info.device) if k in parent["mask"] else m
                    for k, m in mask.items()
                }
            # A criterion that reads data scores the global batch: every rank its part, together
            # (SNIP's gradients are averaged over the ranks, BatchNorm syncs), as one rank would
            # score it whole. The others run on rank 0 alone; rank 0's mask is the one saved.
            if self.info.is_main or criterion_of(step).needs_data:
                if level.parent is not None and not self.needs_trained_parent(level):
                    parent_mask = self._mask_of(level.parent)  # a random draw within the parent's mask
                    mask = {
                        k: parent_mask[k].to(self.info.device) if k in parent_mask else m for k, m in mask.items()
                    }
                mask = self._prune(level, mask)
                self._save({"mask": {k: v.cpu() for k, v in mask.items()}}, d.mask)
            barrier(self.info)
            mask = {
                k: v.to(self.info.device) for k, v in ckpt.load_weights(d.mask, self.info.device)["mask"].items()
            }
        rewind = step.get("rewind", "init") if step else "init"
        opt = build_optimizer(self.model, self.train["optimizer"])
        start_step = 0
        if level.parent is not None and rewind == "init":
            self.model.load_state_dict(init)
        elif rewind == "reinit":  # imp_reinit: the mask above, a fresh initialisation (another seed)
            self.model.load_state_dict(self._fresh_init(int(step["init_seed"])))
        elif level.parent is not None and rewind == "step":
            k = rewind_step(step["rewind_to"], self.steps_per_epoch)
            total = self.steps_per_epoch * self.epochs
            if not 0 <= k < total:
                raise ValueError(
                    f"imp_wr rewind point {k} is outside the level's {total} steps "
                    "(prune.rewind_epochs / prune.rewind_iterations)"
                )
            snap = ckpt.load_weights(self._snapshot(level.root, k), self.info.device)
            self.model.load_state_dict(snap["model"])
            if step.get("rewind_optimizer"):
                opt.load_state_dict(snap["optimizer"])
            start_step = k
        # rewind "none" (learning-rate rewinding): keep the parent's trained weights
        apply_mask(self.model, mask)
        return mask, opt, start_step

    def _fresh_init(self, seed: int) -> dict[str, torch.Tensor]:
        """The weights the model is built with under `seed` (built on the CPU, as the run's own
        initial weights are; the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(self.train["model"], self.loaders.num_classes, self.loaders.input_shape)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _snapshot(self, root_id: str, k: int) -> Path:
        """Level 0's weights and optimizer at step k. Written while level 0 trains when the plan
        asks for k; otherwise replayed here from init (k steps, same seeds and data order)."""
        root = self.dir(root_id)
        if root.snapshot(k).exists():
            return root.snapshot(k)
        init = ckpt.load_weights(root.init, self.info.device)["model"]
        self.model.load_state_dict(init)
        mask = full_mask(self.model)
        opt = build_optimizer(self.model, self.train["optimizer"])
        net = self._wrap()
        hooks = StepHooks(after_step=MaskEnforcer(self.model, mask))
        hooks.at_step[k] = self._snapshot_hook(root, k, opt)
        spec = LevelSpec(root_id, None, root_id, 0, "dense", 1.0, None, self.train)
        for epoch in range(k // self.steps_per_epoch + 1):
            if self._epoch_pass(net, spec, opt, epoch, hooks, _StopAt(k)).stopped_at is not None:
                break
        barrier(self.info)
        return root.snapshot(k)

    def _prune(self, level: LevelSpec, mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        step = level.step
        crit = criterion_of(step)
        pcfg = {**step, "input_shape": tuple(self.loaders.input_shape)}
        batches = None
        if crit.needs_data or crit.name == "synflow":
            n = int(
                (crit.plugin or {}).get("batches") or step.get("snip_batches") or step.get("prune_batches") or 1
            )
            self.loaders.train.set_epoch(PRUNE_ORDER_KEY + level.depth)
            batches = []
            for x, y in self.loaders.train:
                batches.append((x.clone(), y.clone()))  # FFCV reuses its buffers a few batches on
                if len(batches) >= n:
                    break
        # Seeded by the level itself (its id without code), so a random mask is the same in every
        # sweep that asks for it, under either reuse policy and whichever code draws it.
        seed = code_free_id(level, lambda lid: read_level(self.levels_dir, lid))
        gen = torch.Generator().manual_seed(int(seed, 16) % (2**63 - 1))
        ctx = PruneContext(
            cfg=pcfg,
            generator=gen,
            batches=batches,
            loss_fn=self.eval_loss,
            average=(lambda t: average(self.info, t)) if crit.needs_data and self.info.distributed else None,
        )
        return pruner_for_step(step)(self.model, mask, level.density, ctx)

    def _wrap(self) -> nn.Module:
        net: nn.Module = self.model
        if self.info.distributed:
            net = DDP(net, device_ids=[self.info.local_rank] if self.info.device.type == "cuda" else None)
        if self.opts.get("compile"):
            net = torch.compile(net)
        return net

    def _epoch_metrics(self, net: nn.Module, res: EpochResult, epoch: int) -> dict[str, Any]:
        every = max(int(self.opts.get("eval_every", 1)), 1)
        metrics: dict[str, Any] = {
            "train_loss": res.loss,
            "train_acc": res.acc,
            "seconds": res.seconds,
            "images_per_s": float(res.sums[2]) / max(res.seconds, 1e-9),
            "lr": res.lr,
            "steps": res.steps,
            "test_loss": None,
            "test_acc": None,
            "test_top5": None,
        }
        if (epoch + 1) % every == 0 or epoch == self.epochs - 1:
            metrics.update(
                evaluate(
                    net,
                    self.loaders.test,
                    info=self.info,
                    loss_fn=self.eval_loss,
                    precision=self.precision,
                    channels_last=self.channels_last,
                )
            )
        return metrics

    def _checkpoint(
        self,
        d: LevelDir,
        step: int,
        mask: dict[str, torch.Tensor],
        opt: torch.optim.Optimizer,
        best: float,
        carry: torch.Tensor | None,
        history: list[dict[str, Any]],
        rng: torch.Tensor | None = None,
        wait: bool = False,
    ) -> None:
        """LEVEL_DIR/checkpoint.pt, off the critical path: the state is copied to host memory
        here (after the write in flight, if any, is done), then written atomically by the
        background writer while training goes on. `wait`: return once it is on disk (a stop)."""
        if not self.info.is_main:
            return
        self._writer.wait()  # one host copy at a time; and the previous write's error, if any
        state = ckpt.host_copy(
            {
                "step": step,
                "model": self.model.state_dict(),
                "optimizer": opt.state_dict(),
                "mask": mask,
                "best": best,
                "carry": carry,
                "history": history,
                "rng": rng,
                "trained_by": self._attempts,
            }
        )
        path = d.checkpoint
        self._writer.submit(lambda: self._save(state, path))
        if wait:
            self._writer.wait()

    def _finish(
        self,
        level: LevelSpec,
        d: LevelDir,
        mask: dict[str, torch.Tensor],
        history: list[dict[str, Any]],
        best: float,
    ) -> None:
        self._writer.wait()  # the last epoch's checkpoint: on disk before final.pt replaces it
        if self.info.is_main:
            self._save({"model": self._weights(), "mask": {k: v.cpu() for k, v in mask.items()}}, d.final)
            last = history[-1] if history else {}
            # The cost per example at the resolution the level trains at (its last epoch's, under
            # progressive resizing), not the test resolution: ImageNet trains at 192 px, tests at 256.
            shape = tuple(self.loaders.train_shape(self.epochs - 1))
            result = {
                "level_id": level.level_id,
                "density": level.density,
                "achieved_sparsity": achieved_sparsity(self.model, list(mask)),
                **_cost_or_none(self.model, shape),
                "resolution": int(shape[-2]),  # what the cost was counted at (the input's height)
                "test_acc": last.get("test_acc"),
                "test_top5": last.get("test_top5"),
                "test_loss": last.get("test_loss"),
                "best_test_acc": best,
                "train_loss": last.get("train_loss"),
                "train_acc": last.get("train_acc"),
                "epochs": len(history),
                "seconds": sum(h["seconds"] for h in history),
                "provenance": self.provenance.of_level(
                    level.step, model_of(level.train), self._attempts, data_of(level.train)
                ),
                "history": history,
                # binds the weights to this record: a final.pt swapped in later is refused
                DIGEST_KEY: d.final_digest(),
            }
            d.write_result(result)  # the record: the store imports it from here if it must
            d.checkpoint.unlink(missing_ok=True)
            self.rec.finish_level(level.level_id, result)
        barrier(self.info)


def read_level(levels_dir: Path, level_id: str) -> LevelSpec:
    """LEVELS/<id>/level.json, checked: named after its id, hashing to it, ids that are ids."""
    d = LevelDir(levels_dir / level_id)
    if not is_level_id(level_id):
        raise BadLevel(f"{level_id!r} is not a level id")
    if not d.description.exists():
        raise FileNotFoundError(f"{d.description} not found: the level was never planned here")
    try:
        return d.read_spec()
    except BadLevel as exc:
        raise BadLevel(f"level {level_id} ({d.path}): {exc}") from None


COST_KEYS = ("params", "nonzero_params", "network_sparsity", "flops_dense", "flops")


def _cost_or_none(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """level_cost, or None for each figure when it cannot be computed for this model (a zoo
    model's forward the counting hooks do not follow): the level is recorded all the same."""
    try:
        return level_cost(model, input_shape)
    except Exception as exc:  # noqa: BLE001 - a cost is a figure of the record, never a reason to lose it
        print(f"level cost not computed ({type(exc).__name__}: {exc}); recorded as null", flush=True)
        return dict.fromkeys(COST_KEYS)
