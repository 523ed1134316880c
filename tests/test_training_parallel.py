"""``training/parallel.py``: how many processes a stage's jobs get, and how jobs are named. Training in processes
is tested through the stages (``test_training_segmenter.py``, ``test_training_pipeline.py``)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.fixtures.processes import alive, survivors_of_killing
from training.distributed import DistContext
from training.parallel import JobKind, parallel_workers

ROOT = Path(__file__).resolve().parents[1]

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


_ORPHAN_PARENT = """
import os, sys, time, multiprocessing
from concurrent.futures import ProcessPoolExecutor
from cascade.processes import die_with_parent
from training.parallel import start_manager

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    manager = start_manager(context)  # serves the jobs' events queue
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),))
    pool.submit(os.getpid).result(timeout=60)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_job_processes_end_when_the_training_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL to `cascade train` used to leave its fold/class processes training on for tens of minutes, and the
    events queue's manager process asleep."""
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        children = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(children) == 2 and all(alive(pid) for pid in children)  # the manager and the job process
        assert not survivors_of_killing(parent, children), "a process outlived its killed parent"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        parent.stdout.close()
