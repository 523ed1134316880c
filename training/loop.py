"""The shared epoch loop: AMP on CUDA, gradient scaling and clipping, per-batch LR schedule, validation,
early stopping, checkpoints (save and exact resume) and metrics (CSV, TensorBoard when installed).

Progress: one bar per ``fit`` call (a classifier fold, a refit, a segmenter), over all its epochs' batches,
its postfix the epoch, the running loss and the last validated score; the epoch log lines are written above
the bar (``tqdm.contrib.logging``) instead of through it. ``progress=`` hands the bar's updates to another
drawer (e.g. the parent of parallel fold or class processes, ``training.parallel``).

Checkpoints are ``torch.save`` of plain state dicts and are read back with ``weights_only=True``:
``last.pt`` (model, optimizer, scheduler, grad scaler, epoch, early-stopping state, RNG states) after every
epoch, ``best.pt`` (model weights of the best validated epoch). Only rank 0 writes files.
"""

from __future__ import annotations

import csv
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from cascade.runtimes.base import cpu_supports_bf16
from training.config import TrainConfig
from training.distributed import DistContext, all_gather_objects, barrier
from training.optim import create_optimizer, create_scheduler
from training.paths import BEST_FILE, LAST_FILE, METRICS_FILE

__all__ = ["FitResult", "ProgressFactory", "capture_rng", "fit", "load_checkpoint", "restore_rng", "use_cpu_bf16"]

logger = logging.getLogger(__name__)

Validate = Callable[[nn.Module], dict[str, float]]
"""Called with the unwrapped model in eval mode on every rank; returns metrics including the monitored one."""

ProgressFactory = Callable[..., Any]
"""Makes the progress bar of one ``fit``: called as ``factory(total=, initial=, desc=)`` (batches over all
epochs); the bar needs ``update(n)``, ``set_postfix_str(text)``, ``refresh()``, ``close()`` and ``n``/``total``
attributes, as a ``tqdm`` has."""


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        best_epoch: 1-based epoch of the kept weights: the best validated one, or the last one without
            validation or with ``keep="last"``.
        best_score: the monitored metric of that epoch (``nan`` when it was not validated).
        epochs_run: epochs completed in total (including those before a resume).
        stopped_early: True when early stopping ended the run.
    """

    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states, as tensors and plain values (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
            "kind": str(kind),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read one of our checkpoints safely (``weights_only=True``: plain containers and tensors only)."""
    return torch.load(Path(path), map_location=device, weights_only=True)


def _to_device(value: Any, device: torch.device, memory_format: torch.memory_format | None = None) -> Any:
    """Move a tensor, or the tensors of a tuple/list, to ``device``."""
    if isinstance(value, tuple | list):
        return type(value)(_to_device(v, device) for v in value)
    if memory_format is not None and value.ndim == 4:
        return value.to(device, non_blocking=True, memory_format=memory_format)
    return value.to(device, non_blocking=True)


def _float(value: Any) -> Any:
    """Model outputs (a tensor or a tuple of tensors) as float32 for the loss."""
    return tuple(v.float() for v in value) if isinstance(value, tuple | list) else value.float()


class _MetricsLog:
    """Rank-0 metrics sink: one CSV row per epoch, mirrored to TensorBoard when it is installed."""

    def __init__(self, out_dir: Path, enabled: bool, resume: bool) -> None:
        self.path = out_dir / METRICS_FILE
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        if not resume and self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        except ImportError:
            logger.debug("tensorboard not installed; metrics go to %s only", self.path)

    def write(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        rows = []
        if self.path.exists():
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        rows = [r for r in rows if int(r["epoch"]) < row["epoch"]] + [{k: str(v) for k, v in row.items()}]
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self._writer.add_scalar(key, value, int(row["epoch"]))
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def use_cpu_bf16(config: TrainConfig, device: torch.device) -> bool:
    """Whether ``config.cpu_bf16`` takes effect on ``device``: on a CPU with native bf16 arithmetic only
    (AMX / AVX512-BF16 on x86, BF16 on Arm). Elsewhere torch emulates bf16, about 8x *slower* than float32
    (measured: resnet10t, batch 16 at 64x400, one AVX2 core: 7.8 s vs 1.0 s per step), so training stays in
    float32 and one warning says so."""
    if not config.cpu_bf16 or device.type != "cpu":
        return False
    if cpu_supports_bf16():
        return True
    _warn_no_bf16()
    return False


@functools.cache
def _warn_no_bf16() -> None:
    logger.warning(
        "cpu_bf16 is set but this CPU has no native bf16 (no AMX / AVX512-BF16): training in float32, "
        "which is several times faster here than emulated bf16"
    )


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    ctx: DistContext,
    bar: Any,
    postfix: str,
) -> float:
    """One pass over ``loader``, advancing ``bar`` per batch (postfix: ``postfix`` with ``{loss}``, the running
    loss, filled in); returns the mean loss over all ranks."""
    model.train()
    cuda_amp = config.amp and ctx.device.type == "cuda"
    cpu_bf16 = use_cpu_bf16(config, ctx.device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    total, count = 0.0, 0
    for inputs, targets in loader:
        inputs = _to_device(inputs, ctx.device, memory_format)
        targets = _to_device(targets, ctx.device)
        optimizer.zero_grad(set_to_none=True)
        dtype = torch.float16 if cuda_amp else torch.bfloat16
        with torch.autocast(device_type=ctx.device.type, dtype=dtype, enabled=cuda_amp or cpu_bf16):
            logits = model(inputs)
        loss = loss_fn(_float(logits), targets)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += float(loss.detach()) * len(inputs)
        count += len(inputs)
        bar.set_postfix_str(postfix.format(loss=f"{total / max(count, 1):.4f}"), refresh=False)
        bar.update(1)
    sums = all_gather_objects((total, count))
    return sum(s for s, _ in sums) / max(1, sum(c for _, c in sums))


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    loss_fn: nn.Module,
    config: TrainConfig,
    out_dir: str | Path,
    ctx: DistContext,
    *,
    validate: Validate | None = None,
    monitor: str = "dice",
    resume: bool = False,
    stop_after: int | None = None,
    desc: str = "train",
    progress: ProgressFactory | None = None,
) -> FitResult:
    """Train ``model`` for ``config.epochs`` epochs (or until early stopping), checkpointing every epoch.

    On return the model (on ``ctx.device``) holds the best validated weights, or the last ones without
    validation or with ``config.keep == "last"`` (then ``best.pt`` holds the last weights too and the result
    reports the last epoch). Under DDP every rank calls this with its own shard of the data.

    Args:
        model: the network; moved to ``ctx.device`` and wrapped in DDP when ``ctx.distributed``.
        train_loader: yields ``(inputs, targets)``; its sampler/dataset get ``set_epoch(epoch)`` when they have it.
        loss_fn: ``loss_fn(logits, targets)`` -> scalar.
        config: epochs, optimizer, schedule, AMP, clipping, patience.
        out_dir: folder for ``last.pt``, ``best.pt`` and ``metrics.csv``.
        ctx: distributed context.
        validate: computes validation metrics (higher ``monitor`` is better).
        monitor: key of the metric that picks the best epoch and drives early stopping.
        resume: continue from ``out_dir/last.pt`` when it exists.
        stop_after: leave after this many epochs of this call (a pre-emption; the run can be resumed).
        desc: progress-bar label.
        progress: makes the progress bar (default: a ``tqdm`` on stderr, rank 0 only, log lines above it).
    """
    if progress is None:  # a terminal bar on rank 0; the epoch logs go above it, not through it
        terminal = functools.partial(tqdm, disable=not ctx.is_main, dynamic_ncols=True, leave=True, unit="batch")
        with logging_redirect_tqdm():
            return fit(model, train_loader, loss_fn, config, out_dir, ctx, validate=validate, monitor=monitor,
                       resume=resume, stop_after=stop_after, desc=desc, progress=terminal)  # fmt: skip
    out_dir = Path(out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    optimizer = create_optimizer(model.parameters(), config.optimizer)
    scheduler = create_scheduler(optimizer, config.scheduler, steps_per_epoch=len(train_loader), epochs=config.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and ctx.device.type == "cuda")

    start_epoch, best_epoch, best_score, bad_epochs = 0, 0, float("-inf"), 0
    last_score = float("nan")
    last_path, best_path = out_dir / LAST_FILE, out_dir / BEST_FILE
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, ctx.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_epoch, bad_epochs = state["epoch"], state["best_epoch"], state["bad_epochs"]
        best_score, last_score = state["best_score"], state["last_score"]
        restore_rng(state["rng"])
        logger.info("%s: resumed from %s at epoch %d", desc, last_path, start_epoch)
    log = _MetricsLog(out_dir, ctx.is_main, resume and start_epoch > 0)
    stopped_early = bad_epochs >= config.patience > 0
    steps = len(train_loader)
    bar = progress(total=config.epochs * steps, initial=start_epoch * steps, desc=desc)
    scored = ""
    epoch = start_epoch
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if stopped_early or (stop_after is not None and epoch > start_epoch + stop_after):
            epoch -= 1
            break
        for holder in (train_loader.sampler, train_loader.dataset):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
        started = time.perf_counter()
        postfix = f"epoch {epoch}/{config.epochs}, loss {{loss}}{scored}"
        train_loss = _train_epoch(net, train_loader, loss_fn, optimizer, scheduler, scaler, config, ctx, bar, postfix)
        row: dict[str, float] = {"epoch": epoch, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}
        last_score = float("nan")
        validated = validate is not None and (epoch % config.val_every == 0 or epoch == config.epochs)
        if validated:
            model.eval()
            with torch.no_grad():
                metrics = validate(model)
            row.update({f"val_{k}": v for k, v in metrics.items()})
            score = last_score = metrics[monitor]
            scored = f", {monitor} {score:.4g}"
            bar.set_postfix_str(f"epoch {epoch}/{config.epochs}, loss {train_loss:.4f}{scored}")
            if score > best_score:
                best_score, best_epoch, bad_epochs = score, epoch, 0
                if ctx.is_main:
                    torch.save({"model": model.state_dict(), "epoch": epoch, "score": score}, best_path)
            else:
                bad_epochs += 1
                stopped_early = bad_epochs >= config.patience > 0
        row["seconds"] = time.perf_counter() - started
        if ctx.is_main:
            logger.info(
                "%s epoch %d: %s", desc, epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
            )
            log.write(row)
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "best_epoch": best_epoch,
                    "best_score": best_score,
                    "bad_epochs": bad_epochs,
                    "last_score": last_score,
                    "rng": capture_rng(),
                },
                last_path,
            )
        barrier()
    log.close()
    if bar.n < bar.total:  # early stopping or a pre-emption: the bar ends where training did
        bar.total = bar.n
        bar.set_postfix_str(f"stopped at epoch {epoch}/{config.epochs}{scored}", refresh=False)
        bar.refresh()
    bar.close()
    finished = epoch
    if validate is None or best_epoch == 0 or config.keep == "last":
        if ctx.is_main:
            torch.save({"model": model.state_dict(), "epoch": finished, "score": last_score}, best_path)
        barrier()
        return FitResult(finished, last_score, finished, stopped_early)
    model.load_state_dict(load_checkpoint(best_path, ctx.device)["model"])
    return FitResult(best_epoch, best_score, finished, stopped_early)
