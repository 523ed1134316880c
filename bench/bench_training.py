"""Training-step throughput of the demo recipe's networks on CPU: fp32 vs bf16 autocast vs bf16 + channels-last.

Usage::

    python -m bench.bench_training            # 6 timed steps per setting
    python -m bench.bench_training --quick    # 2 timed steps per setting
    python -m bench.bench_training --config configs/severstal-gpu.yaml   # another recipe's networks

Each setting builds the recipe's classifier (whole images at the recipe's input scale, with its deep-supervision
head when enabled) and one segmenter (the recipe's crop size), then times full optimizer steps (forward, loss,
backward, AdamW) on random batches of the recipe's batch size, all in one process, side by side. This is the
measurement behind ``cpu_bf16: true`` / ``channels_last: true`` in ``configs/demo-cpu.yaml``.
Writes ``bench/results/training.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "training.md"
SETTINGS = (("fp32", False, False), ("bf16 autocast", True, False), ("bf16 + channels_last", True, True))


def _time_steps(model, loss_fn, inputs, targets, *, bf16: bool, channels_last: bool, steps: int) -> float:
    """Seconds per optimizer step (after one warm-up step)."""
    import torch

    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(inputs)
        outputs = tuple(o.float() for o in outputs) if isinstance(outputs, tuple) else outputs.float()
        loss_fn(outputs, targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write its markdown section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo-cpu.yaml", help="recipe YAML")
    parser.add_argument("--quick", action="store_true", help="2 timed steps per setting instead of 6")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from models import create_loss
    from training.data import scaled_size
    from training.deep_supervision import MaskSupervisedClassifier, MaskSupervisedLoss
    from training.recipe import load_config
    from training.workspace import build_classifier, build_segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    steps = 2 if args.quick else 6
    h, w = scaled_size(256, 1600, config.input.scale, config.input.scale_x)
    stride = config.input.stride
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    cb, sb = config.classifier.train.batch_size, config.segmenter.train.batch_size
    crop = config.segmenter.crop
    ch, cw = (crop.height or hp), (crop.width or wp)
    torch.manual_seed(0)
    rows = []
    for label, bf16, channels_last in SETTINGS:
        classifier = build_classifier(config)
        cls_loss = create_loss(config.classifier.loss.name, **config.classifier.loss.kwargs)
        cls_targets = torch.randint(0, 2, (cb, 4)).float()
        if config.classifier.aux_mask_weight > 0:
            classifier = MaskSupervisedClassifier(classifier, 4)
            cls_loss = MaskSupervisedLoss(cls_loss, config.classifier.aux_mask_weight)
            cls_targets = (cls_targets, (torch.rand(cb, 4, hp, wp) > 0.95).float())
        c = _time_steps(classifier, cls_loss, torch.randn(cb, 3, hp, wp), cls_targets, bf16=bf16,
                        channels_last=channels_last, steps=steps)  # fmt: skip
        segmenter = build_segmenter(config, 3, pretrained=False)  # scratches: the largest class
        seg_loss = create_loss(config.segmenter.loss.name, **config.segmenter.loss.kwargs)
        s = _time_steps(segmenter, seg_loss, torch.randn(sb, 3, ch, cw), (torch.rand(sb, 1, ch, cw) > 0.9).float(),
                        bf16=bf16, channels_last=channels_last, steps=steps)  # fmt: skip
        rows.append((label, c, s))
        print(f"{label:<22} classifier {1000 * c / cb:7.1f} ms/image   segmenter {1000 * s / sb:7.1f} ms/crop")
    base_c, base_s = rows[0][1], rows[0][2]
    lines = [
        "## Training step throughput (CPU)",
        "",
        f"Recipe `{args.config.name}`: classifier `{config.classifier.backbone}` on {cb} x {hp}x{wp} images, "
        f"segmenter `{config.segmenter.arch}/{config.segmenter.encoder}` on {sb} x {ch}x{cw} crops; "
        f"{steps} timed AdamW steps each, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}, "
        f"torch {torch.__version__}. Numbers vary with machine load; compare within one run.",
        "",
        "| setting | classifier ms/image | speed-up | segmenter ms/crop | speed-up |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {1000 * c / cb:.1f} | {base_c / c:.2f}x | {1000 * s / sb:.1f} | {base_s / s:.2f}x |"
            for label, c, s in rows
        ),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
