"""Folder jobs: confinement to the data root, progress, result, cancel, and resuming after a restart or kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from cascade.formats import read_annotations
from tests.fixtures.service import GatedPredictor, encode_image, free_port, loader_for, make_settings, running_client


@pytest.fixture
def data_root(tmp_path: Path, service_images: list[np.ndarray]) -> Path:
    """``data/imgs`` with 4 images and one unreadable file, plus an ``outside`` folder beyond the root."""
    root = tmp_path / "data"
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    for i, image in enumerate(service_images[:4]):
        (imgs / f"img{i}.png").write_bytes(encode_image(image, "PNG"))
    (imgs / "zz_broken.jpg").write_bytes(b"not a jpeg")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(encode_image(service_images[0], "PNG"))
    return root


def _wait_state(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/jobs/{job_id}").json()
        if body["state"] in states:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job stuck in {body}")
        time.sleep(0.02)


def test_job_folders_are_confined_to_the_data_root(tmp_path: Path, data_root: Path, service_predictor) -> None:
    (data_root / "escape").symlink_to(tmp_path / "outside")
    linked = data_root / "linked"
    linked.mkdir()
    (linked / "a.png").symlink_to(tmp_path / "outside" / "secret.png")
    with running_client(make_settings(tmp_path / "state", data_root=data_root), loader_for(service_predictor)) as c:
        for folder, status, message in [
            ("../outside", 403, "without '..'"),
            ("imgs/../../outside", 403, "without '..'"),
            (str(tmp_path / "outside"), 403, "relative path"),
            ("escape", 403, "resolves outside the data root"),
            ("linked", 403, "'a.png' is a symlink leading outside"),
            ("missing", 404, "is not a folder under the data root"),
            ("imgs/img0.png", 404, "is not a folder"),
        ]:
            response = c.post("/jobs", json={"folder": folder})
            assert response.status_code == status, (folder, response.text)
            assert message in response.json()["detail"], folder
        assert c.post("/jobs", json={"folder": "imgs", "extra": 1}).status_code == 422
        assert c.get("/jobs").json() == []
    with running_client(make_settings(tmp_path / "state2"), loader_for(service_predictor)) as c:
        response = c.post("/jobs", json={"folder": "imgs"})
        assert response.status_code == 501 and "--data-root" in response.json()["detail"]


def test_job_scores_the_folder(tmp_path: Path, data_root: Path, service_predictor) -> None:
    from cascade.imageio import read_image

    settings = make_settings(tmp_path / "state", data_root=data_root)
    with running_client(settings, loader_for(service_predictor)) as c:
        created = c.post("/jobs", json={"folder": "imgs"})
        assert created.status_code == 202
        job = created.json()
        assert created.headers["Location"] == f"/jobs/{job['id']}"
        assert job["total"] == 5 and job["state"] in ("queued", "running", "done")
        final = _wait_state(c, job["id"], ("done", "failed"))
        assert final["state"] == "done", final
        assert (final["total"], final["done"], final["failed"]) == (5, 5, 1)
        assert final["errors"][0]["file"] == "zz_broken.jpg"
        csv = c.get(f"/jobs/{job['id']}/submission.csv")
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert [j["id"] for j in c.get("/jobs").json()] == [job["id"]]
        assert c.get("/jobs/0123456789abcdef0123456789abcdef").status_code == 404
        assert c.get("/jobs/..%2F..%2Fetc").status_code == 404
    out = tmp_path / "job.csv"
    out.write_bytes(csv.content)
    annotations = read_annotations(out)
    names = [f"img{i}.png" for i in range(4)]
    assert annotations.image_ids == tuple(names)
    for name in names:
        image = read_image(data_root / "imgs" / name)
        assert annotations.rles[name] == tuple(service_predictor.predict([image], [name])[0].rles)


def test_running_job_conflicts_cancels_and_resumes_after_restart(
    tmp_path: Path, data_root: Path, service_predictor
) -> None:
    settings = make_settings(tmp_path / "state", data_root=data_root, job_batch_size=1)
    blocked = GatedPredictor(blocked=True)
    with running_client(settings, loader_for(blocked)) as c:
        keep = c.post("/jobs", json={"folder": "imgs"}).json()["id"]
        drop = c.post("/jobs", json={"folder": "imgs"}).json()["id"]
        blocked.entered.wait(10)
        assert c.get(f"/jobs/{keep}").json()["state"] == "running"
        conflict = c.get(f"/jobs/{keep}/submission.csv")
        assert conflict.status_code == 409 and "is running" in conflict.json()["detail"]
        cancelled = c.delete(f"/jobs/{drop}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert c.get(f"/jobs/{drop}/submission.csv").status_code == 409
        blocked.gate.set()  # let the in-flight image finish; shutdown leaves the job queued on disk
    # a graceful restart with the real predictor resumes the unfinished job; the cancelled one stays cancelled
    with running_client(settings, loader_for(service_predictor)) as c:
        assert _wait_state(c, keep, ("done", "failed"))["state"] == "done"
        assert c.get(f"/jobs/{drop}").json()["state"] == "cancelled"
        rows = c.get(f"/jobs/{keep}/submission.csv").text.splitlines()
        assert len(rows) == 1 + 4 * 4 and len(set(rows)) == len(rows)
        deleted = c.delete(f"/jobs/{drop}")
        assert deleted.status_code == 200
        assert c.get(f"/jobs/{drop}").status_code == 404
        assert not (tmp_path / "state" / "jobs" / drop).exists()


def _start_server(bundle: Path, state: Path, data_root: Path, port: int, log: Path) -> subprocess.Popen:
    """``cascade serve`` in a subprocess, with the test process's thread settings (same numerics)."""
    env = {**os.environ, "CASCADE_JOB_BATCH_SIZE": "1", "CASCADE_NUM_SAMPLES": "0", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "cascade.cli.main", "serve", "--bundle", str(bundle), "--port", str(port),
        "--state-dir", str(state), "--data-root", str(data_root), "--runtime", "torch", "--device", "cpu",
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("ab") as handle:
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _wait_ready(client: httpx.Client, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def test_job_killed_mid_way_resumes_to_the_same_csv(
    tmp_path: Path, tiny_bundle_path: Path, service_predictor, service_images: list[np.ndarray]
) -> None:
    """kill -9 a real ``cascade serve`` mid-job; a new app on the same state dir resumes it without lost or
    duplicated rows, and the CSV equals an uninterrupted run's."""
    root = tmp_path / "data"
    folder = root / "many"
    folder.mkdir(parents=True)
    total = 24
    for i in range(total):
        image = np.roll(service_images[i % len(service_images)], 7 * i, axis=1)
        (folder / f"{i:03d}.png").write_bytes(encode_image(image, "PNG"))
    state, log, port = tmp_path / "state", tmp_path / "server.log", free_port()
    proc = _start_server(tiny_bundle_path, state, root, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _wait_ready(client, proc, log)
            job_id = client.post("/jobs", json={"folder": "many"}).json()["id"]
            deadline = time.monotonic() + 120
            while (done := client.get(f"/jobs/{job_id}").json()["done"]) < 3:
                assert time.monotonic() < deadline, "job made no progress"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    finally:
        proc.kill()
        proc.wait(30)
    assert done < total, "the job finished before it could be killed"
    partial = (state / "jobs" / job_id / "submission.csv").read_bytes()
    assert 1 + 4 * 3 <= partial.count(b"\n") < 1 + 4 * total

    settings = make_settings(state, data_root=root, job_batch_size=1)
    with running_client(settings, loader_for(service_predictor)) as c:
        resumed = _wait_state(c, job_id, ("done", "failed", "cancelled"))
        assert resumed["state"] == "done" and resumed["done"] == total and resumed["failed"] == 0, resumed
        resumed_csv = c.get(f"/jobs/{job_id}/submission.csv").content
        fresh_id = c.post("/jobs", json={"folder": "many"}).json()["id"]
        assert _wait_state(c, fresh_id, ("done", "failed"))["state"] == "done"
        fresh_csv = c.get(f"/jobs/{fresh_id}/submission.csv").content
    whole = partial.split(b"\n")[:-1]  # complete lines of the killed run
    whole = whole[: 1 + 4 * ((len(whole) - 1) // 4)]  # whole images only
    assert resumed_csv.startswith(b"\n".join(whole) + b"\n")  # rows written before the kill were kept
    assert resumed_csv == fresh_csv
    lines = resumed_csv.decode().splitlines()
    assert len(lines) == 1 + 4 * total and len(set(lines)) == len(lines)
