"""``training/parallel.py``: how many processes a stage's jobs get, and how jobs are named. Training in processes
is tested through the stages (``test_training_segmenter.py``, ``test_training_pipeline.py``)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from training.distributed import DistContext
from training.parallel import JobKind, parallel_workers

_KIND = JobKind(stage="segmenter", noun="class", plural="classes", setting="segmenter.parallel_classes")


@pytest.mark.parametrize(
    ("wanted", "pending", "workers"),
    [(1, 4, 1), (2, 4, 2), (3, 2, 2), (2, 1, 1), (2, 0, 1)],
)
def test_cpu_runs_get_the_wanted_processes_but_no_more_than_jobs(wanted: int, pending: int, workers: int) -> None:
    ws = SimpleNamespace(ctx=DistContext())
    assert parallel_workers(ws, _KIND, wanted, pending) == workers


@pytest.mark.parametrize(
    "ctx",
    [DistContext(rank=0, world_size=2), DistContext(device=torch.device("cuda", 0))],
    ids=["torchrun", "cuda"],
)
def test_torchrun_and_cuda_train_one_by_one(ctx: DistContext, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert parallel_workers(SimpleNamespace(ctx=ctx), _KIND, 2, 4) == 1
    assert "segmenter.parallel_classes applies to CPU runs without torchrun; training classes one by one" in (
        caplog.messages
    )


def test_job_names() -> None:
    assert _KIND.names([3, 1, 2]) == "segmenter classes 3, 1, 2"
    assert _KIND.names([3]) == "segmenter class 3"
