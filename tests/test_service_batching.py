"""The inference worker: merging, error isolation, queue bound, timeouts, priorities; and merging over HTTP."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service import create_app
from service.batching import InferenceWorker, Priority, QueueFullError, RequestTimeoutError
from service.metrics import ServiceMetrics
from tests.fixtures.service import GatedPredictor, encode_image, loader_for, make_settings, running_client


def _image(value: int, shape: tuple[int, int] = (8, 12)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_worker_merges_waiting_items_into_one_call() -> None:
    predictor = GatedPredictor(blocked=True)
    metrics = ServiceMetrics()
    worker = InferenceWorker(predictor, max_batch_size=4, max_wait_s=0.0, queue_size=16, metrics=metrics)
    worker.start()
    try:
        first = worker.submit(_image(10), "a")
        _wait_for(predictor.entered.is_set)  # the worker is busy with "a"; the next ones queue up
        rest = [worker.submit(_image(10 + i), name) for i, name in enumerate("bcdef")]
        predictor.gate.set()
        results = [f.result(10) for f in [first, *rest]]
    finally:
        worker.stop()
    assert [r.image_id for r in results] == list("abcdef")
    assert predictor.calls == [["a"], ["b", "c", "d", "e"], ["f"]]
    assert metrics.batch_size._sum.get() == 6
    assert metrics.images.labels("interactive")._value.get() == 6


def test_a_failing_item_fails_alone() -> None:
    predictor = GatedPredictor(blocked=True)
    worker = InferenceWorker(predictor, max_batch_size=8, max_wait_s=0.0, queue_size=16)
    worker.start()
    try:
        blocker = worker.submit(_image(0), "blocker")
        _wait_for(predictor.entered.is_set)
        good1 = worker.submit(_image(10), "good1")
        bad = worker.submit(_image(255), "bad")
        good2 = worker.submit(_image(20), "good2")
        predictor.gate.set()
        assert blocker.result(10).image_id == "blocker"
        assert good1.result(10).image_id == "good1"
        assert good2.result(10).image_id == "good2"
        with pytest.raises(ValueError, match="bad: refusing a white image"):
            bad.result(10)
        assert worker.submit(_image(30), "after").result(10).image_id == "after"  # the worker lives on
    finally:
        worker.stop()
    assert ["good1", "bad", "good2"] in predictor.calls  # merged first, then retried one by one
    assert ["good1"] in predictor.calls and ["bad"] in predictor.calls and ["good2"] in predictor.calls


def test_queue_bound_raises_queue_full_with_retry_after() -> None:
    predictor = GatedPredictor(blocked=True)
    worker = InferenceWorker(predictor, max_batch_size=1, max_wait_s=0.0, queue_size=2)
    worker.start()
    try:
        running = worker.submit(_image(1), "running")
        _wait_for(predictor.entered.is_set)
        queued = [worker.submit(_image(2), "q1"), worker.submit(_image(3), "q2")]
        with pytest.raises(QueueFullError, match="queue is full") as info:
            worker.submit(_image(4), "refused")
        assert info.value.retry_after >= 1
        predictor.gate.set()
        assert [f.result(10).image_id for f in [running, *queued]] == ["running", "q1", "q2"]
    finally:
        worker.stop()


def test_timed_out_items_are_cancelled_and_skipped() -> None:
    predictor = GatedPredictor(blocked=True)
    worker = InferenceWorker(predictor, max_batch_size=4, max_wait_s=0.0, queue_size=8)
    worker.start()

    async def _run() -> None:
        worker.submit(_image(1), "blocker")
        await asyncio.to_thread(_wait_for, predictor.entered.is_set)
        with pytest.raises(RequestTimeoutError, match=r"did not finish within 0\.05 s"):
            await worker.predict(_image(2), "late", timeout=0.05)

    try:
        asyncio.run(_run())
        predictor.gate.set()
        assert worker.submit(_image(3), "next").result(10).image_id == "next"
    finally:
        worker.stop()
    assert not any("late" in call for call in predictor.calls)


def test_interactive_items_go_before_background_ones() -> None:
    predictor = GatedPredictor(blocked=True)
    worker = InferenceWorker(predictor, max_batch_size=8, max_wait_s=0.0, queue_size=8)
    worker.start()
    try:
        worker.submit(_image(1), "blocker", priority=Priority.BACKGROUND)
        _wait_for(predictor.entered.is_set)
        background = [worker.submit(_image(2), f"job{i}", priority=Priority.BACKGROUND) for i in range(3)]
        interactive = [worker.submit(_image(3), f"req{i}") for i in range(2)]
        predictor.gate.set()
        for future in background + interactive:
            future.result(10)
    finally:
        worker.stop()
    assert predictor.calls == [["blocker"], ["req0", "req1"], ["job0", "job1", "job2"]]


def test_items_with_other_modes_are_not_merged() -> None:
    predictor = GatedPredictor(blocked=True)
    worker = InferenceWorker(predictor, max_batch_size=8, max_wait_s=0.0, queue_size=8)
    worker.start()
    try:
        worker.submit(_image(1), "blocker")
        _wait_for(predictor.entered.is_set)
        futures = [
            worker.submit(_image(2), "c1"),
            worker.submit(_image(2), "s1", mode="segment_all"),
            worker.submit(_image(2), "c2"),
        ]
        predictor.gate.set()
        for future in futures:
            future.result(10)
    finally:
        worker.stop()
    assert predictor.calls[1:] == [["c1", "c2"], ["s1"]]


def test_several_workers_run_batches_side_by_side() -> None:
    predictors = [GatedPredictor(blocked=True), GatedPredictor(blocked=True)]
    worker = InferenceWorker(predictors, max_batch_size=4, max_wait_s=0.0, queue_size=16)
    assert worker.workers == 2 and worker.predictor is predictors[0]
    worker.start()
    try:
        first = [worker.submit(_image(10), "a")]
        _wait_for(lambda: any(p.entered.is_set() for p in predictors))
        first.append(worker.submit(_image(10), "b"))
        _wait_for(lambda: all(p.entered.is_set() for p in predictors))  # both busy at once, one image each
        rest = [worker.submit(_image(20 + i), f"r{i}") for i in range(7)]
        for p in predictors:
            p.gate.set()
        results = [f.result(10) for f in [*first, *rest]]
    finally:
        worker.stop()
    assert [r.image_id for r in results] == ["a", "b", *[f"r{i}" for i in range(7)]]
    calls = [call for p in predictors for call in p.calls]
    assert sorted([["a"], ["b"]]) == sorted(call for call in calls if call[0] in "ab")
    assert sorted(name for call in calls for name in call) == sorted(["a", "b", *[f"r{i}" for i in range(7)]])
    assert max(len(call) for call in calls) > 1  # the waiting requests were merged
    assert all(call == sorted(call, key=lambda n: int(n[1:])) for call in calls if call[0] == "r")  # FIFO


class _SlowPredictor(GatedPredictor):
    def predict(self, images, image_ids=None, mode="cascade", params=None):
        time.sleep(0.002)  # long enough for the other workers to take the next batches
        return super().predict(images, image_ids, mode, params)


def test_several_workers_each_result_goes_to_its_request() -> None:
    predictors = [_SlowPredictor(), _SlowPredictor(), _SlowPredictor()]
    worker = InferenceWorker(predictors, max_batch_size=3, max_wait_s=0.001, queue_size=256)
    worker.start()
    try:
        futures = {f"img{i}": worker.submit(_image(i % 200, (4 + i % 5, 6)), f"img{i}") for i in range(120)}
        results = {name: future.result(10) for name, future in futures.items()}
    finally:
        worker.stop()
    for i, (name, result) in enumerate(results.items()):
        assert result.image_id == name and (result.height, result.width) == (4 + i % 5, 6)
    assert sum(len(p.calls) > 0 for p in predictors) >= 2


def test_several_workers_a_failing_item_fails_alone() -> None:
    predictors = [GatedPredictor(blocked=True), GatedPredictor(blocked=True)]
    worker = InferenceWorker(predictors, max_batch_size=8, max_wait_s=0.0, queue_size=16)
    worker.start()
    try:
        blockers = [worker.submit(_image(0), "blocker1")]
        _wait_for(lambda: any(p.entered.is_set() for p in predictors))
        blockers.append(worker.submit(_image(0), "blocker2"))
        _wait_for(lambda: all(p.entered.is_set() for p in predictors))
        good = [worker.submit(_image(10), f"good{i}") for i in range(3)]
        bad = worker.submit(_image(255), "bad")
        for p in predictors:
            p.gate.set()
        assert [f.result(10).image_id for f in [*blockers, *good]] == [
            "blocker1",
            "blocker2",
            "good0",
            "good1",
            "good2",
        ]
        with pytest.raises(ValueError, match="bad: refusing a white image"):
            bad.result(10)
        assert worker.submit(_image(30), "after").result(10).image_id == "after"
        assert worker.alive
    finally:
        worker.stop()


def test_several_workers_interactive_items_go_before_background_ones() -> None:
    free, busy = GatedPredictor(blocked=True), GatedPredictor(blocked=True)
    worker = InferenceWorker([free, busy], max_batch_size=8, max_wait_s=0.0, queue_size=8)
    worker.start()
    try:
        blockers = [worker.submit(_image(1), "blocker0", priority=Priority.BACKGROUND)]
        _wait_for(lambda: free.entered.is_set() or busy.entered.is_set())
        blockers.append(worker.submit(_image(1), "blocker1", priority=Priority.BACKGROUND))
        _wait_for(lambda: free.entered.is_set() and busy.entered.is_set())
        background = [worker.submit(_image(2), f"job{i}", priority=Priority.BACKGROUND) for i in range(3)]
        interactive = [worker.submit(_image(3), f"req{i}") for i in range(2)]
        free.gate.set()  # one worker comes free while the other still runs a background batch
        for future in interactive + background:
            future.result(10)
        busy.gate.set()
        for future in blockers:
            future.result(10)
    finally:
        worker.stop()
    assert free.calls[1:] == [["req0", "req1"], ["job0", "job1", "job2"]]
    assert len(busy.calls) == 1


def test_worker_refuses_one_predictor_twice() -> None:
    predictor = GatedPredictor()
    with pytest.raises(ValueError, match="distinct predictors"):
        InferenceWorker([predictor, predictor])
    with pytest.raises(ValueError, match="distinct predictors"):
        InferenceWorker([])


@pytest.mark.parametrize(
    ("device", "workers", "threads", "expected"),
    [
        ("cpu", None, None, (4, 1)),  # one single-threaded predictor per core
        ("cpu", None, 2, (2, 2)),
        ("cpu", 2, None, (2, 2)),  # the cores shared among the workers
        ("cpu", 3, 1, (3, 1)),
        ("cuda", None, None, (1, None)),
        ("cuda:1", 2, 4, (2, 4)),
    ],
)
def test_worker_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device, workers, threads, expected) -> None:
    from service.state import worker_plan

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    settings = make_settings(tmp_path, device=device, workers=workers, threads=threads)
    assert worker_plan(settings) == expected


def test_the_service_builds_one_predictor_per_worker_one_after_another(
    tmp_path: Path, service_images: list[np.ndarray]
) -> None:
    built: list[tuple[GatedPredictor, int | None]] = []
    active = threading.Lock()

    def _loader(settings):
        assert active.acquire(blocking=False), "two predictors were built at the same time"
        try:
            time.sleep(0.05)
            built.append((GatedPredictor(), settings.threads))
            return built[-1][0], "fake"
        finally:
            active.release()

    settings = make_settings(tmp_path, workers=3, threads=1)
    with running_client(settings, _loader) as client:
        payload = encode_image(service_images[0], "PNG")
        for i in range(6):
            response = client.post("/predict", files={"file": (f"{i}.png", payload, "image/png")})
            assert response.status_code == 200, response.text
            assert response.json()["image_id"] == f"{i}.png"
        assert client.app.state.cascade.worker.workers == 3
        assert _metric(client.get("/metrics").text, "cascade_inference_workers") == 3
    assert [threads for _, threads in built] == [1, 1, 1]
    assert sum(len(p.calls) for p, _ in built) == 6


def test_a_loader_handing_out_one_predictor_gets_one_worker(tmp_path: Path, service_predictor) -> None:
    with running_client(make_settings(tmp_path, workers=2), loader_for(service_predictor)) as client:
        assert client.app.state.cascade.worker.workers == 1
        assert client.get("/readyz").status_code == 200


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


def test_concurrent_requests_are_merged_and_equal_unbatched(
    tmp_path: Path, service_predictor, service_images: list[np.ndarray]
) -> None:
    names = [f"img{i}.png" for i in range(len(service_images))]
    expected = [
        service_predictor.predict([image], [name])[0].to_dict(include_timings=False)
        for image, name in zip(service_images, names, strict=True)
    ]
    settings = make_settings(tmp_path, max_batch_size=8, max_wait_ms=300.0)
    app = create_app(settings, loader=loader_for(service_predictor))

    async def _run() -> tuple[list[httpx.Response], str]:
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(app.state.cascade.wait_loaded, 120)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
                responses = await asyncio.gather(
                    *[
                        client.post("/predict", files={"file": (name, encode_image(image, "PNG"), "image/png")})
                        for image, name in zip(service_images, names, strict=True)
                    ]
                )
                metrics = (await client.get("/metrics")).text
        return responses, metrics

    responses, metrics = asyncio.run(_run())
    for response, want in zip(responses, expected, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        body.pop("timings")
        assert body == want
    count = _metric(metrics, "cascade_batch_size_count")
    total = _metric(metrics, "cascade_batch_size_sum")
    assert total == len(service_images)
    assert count < total  # at least one predictor call took more than one request


def test_queue_full_answers_503_with_retry_after(tmp_path: Path, service_images: list[np.ndarray]) -> None:
    predictor = GatedPredictor(blocked=True)
    settings = make_settings(tmp_path, max_batch_size=1, queue_size=1, max_wait_ms=0.0)
    app = create_app(settings, loader=loader_for(predictor))
    payload = encode_image(service_images[0], "PNG")

    async def _run() -> None:
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(app.state.cascade.wait_loaded, 120)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:

                def _post(name: str):
                    return client.post("/predict", files={"file": (name, payload, "image/png")})

                running = asyncio.create_task(_post("running.png"))
                await asyncio.to_thread(predictor.entered.wait, 10)
                queued = asyncio.create_task(_post("queued.png"))
                while app.state.cascade.worker.depth() < 1:
                    await asyncio.sleep(0.005)
                refused = await _post("refused.png")
                assert refused.status_code == 503
                assert "queue is full" in refused.json()["detail"]
                assert int(refused.headers["Retry-After"]) >= 1
                predictor.gate.set()
                assert (await running).status_code == 200
                assert (await queued).status_code == 200
                again = await _post("again.png")
                assert again.status_code == 200 and again.json()["image_id"] == "again.png"

    asyncio.run(_run())


def test_request_timeout_answers_504_and_the_server_recovers(tmp_path: Path, service_images: list[np.ndarray]) -> None:
    predictor = GatedPredictor(blocked=True)
    settings = make_settings(tmp_path, request_timeout_s=0.2)
    app = create_app(settings, loader=loader_for(predictor))
    payload = encode_image(service_images[0], "PNG")

    async def _run() -> None:
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(app.state.cascade.wait_loaded, 120)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
                slow = await client.post("/predict", files={"file": ("slow.png", payload, "image/png")})
                assert slow.status_code == 504
                assert "did not finish within 0.2 s" in slow.json()["detail"]
                predictor.gate.set()
                ok = await client.post("/predict", files={"file": ("ok.png", payload, "image/png")})
                assert ok.status_code == 200

    asyncio.run(_run())


def test_poisoned_request_fails_alone_over_http(tmp_path: Path, service_images: list[np.ndarray]) -> None:
    predictor = GatedPredictor(blocked=True)
    settings = make_settings(tmp_path, max_batch_size=8, max_wait_ms=0.0)
    app = create_app(settings, loader=loader_for(predictor))
    good = encode_image(service_images[0], "PNG")
    white = encode_image(np.full((16, 16, 3), 255, dtype=np.uint8), "PNG")

    async def _run() -> None:
        async with app.router.lifespan_context(app):
            await asyncio.to_thread(app.state.cascade.wait_loaded, 120)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
                first = asyncio.create_task(client.post("/predict", files={"file": ("first.png", good)}))
                await asyncio.to_thread(predictor.entered.wait, 10)
                tasks = [
                    asyncio.create_task(client.post("/predict", files={"file": (n, data)}))
                    for n, data in (("a.png", good), ("white.png", white), ("b.png", good))
                ]
                while app.state.cascade.worker.depth() < 3:
                    await asyncio.sleep(0.005)
                predictor.gate.set()
                assert (await first).status_code == 200
                a, bad, b = [await t for t in tasks]
                assert a.status_code == 200 and b.status_code == 200
                assert bad.status_code == 422
                assert "refusing a white image" in bad.json()["detail"]

    asyncio.run(_run())
    assert any(sorted(call) == ["a.png", "b.png", "white.png"] for call in predictor.calls)
