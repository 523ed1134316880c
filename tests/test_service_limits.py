"""service.limits: header checks, cost estimates and the memory budget; the GUI cache's byte bound."""

from __future__ import annotations

import asyncio
import gc

import numpy as np
import pytest

from cascade.imageio import ImageHeader
from cascade.manifest import InputPolicy
from cascade.preprocess import network_pixels, plan_inputs
from service.errors import ServiceError
from service.limits import ImageLimits, MemoryBudget
from service.sessions import Session, SessionCache, SessionTooLargeError


@pytest.mark.parametrize(
    ("shape", "policy"),
    [
        ((1, 1), InputPolicy()),
        ((256, 1600), InputPolicy()),
        ((1, 400), InputPolicy()),
        ((33, 65), InputPolicy(stride=32)),
        ((200, 200), InputPolicy(scale=0.5)),
        ((256, 1600), InputPolicy(mode="tile", tile_width=512, tile_overlap=64)),
        ((100, 300), InputPolicy(mode="tile", tile_width=512, tile_overlap=64)),
        ((7, 1030), InputPolicy(mode="tile", tile_width=256, tile_overlap=32, scale=0.5)),
    ],
)
def test_network_pixels_match_the_input_plan(shape: tuple[int, int], policy: InputPolicy) -> None:
    from cascade.manifest import Normalization

    plan = plan_inputs([np.zeros((*shape, 3), np.uint8)], policy, Normalization())
    expected = sum(batch.shape[0] * batch.shape[2] * batch.shape[3] for _, batch in plan.batches())
    assert network_pixels(*shape, policy) == expected


def test_a_thin_image_costs_far_more_than_its_pixels() -> None:
    assert network_pixels(1, 400_000, InputPolicy(stride=32)) == 32 * 400_000


LIMITS = ImageLimits(
    max_pixels=1_000_000,
    max_aspect_ratio=20,
    max_network_pixels=300_000,
    max_mask_pixels=50_000,
    policy=InputPolicy(stride=32),
    num_classes=4,
)


@pytest.mark.parametrize(
    ("width", "height", "masks", "message"),
    [
        (2_000, 1_000, False, r"2000000 pixels, more than 1000000 \(--max-image-pixels\)"),
        (4_000, 100, False, r"aspect ratio of 40:1, more than 20:1 \(--max-aspect-ratio\)"),
        (100, 4_000, False, r"aspect ratio of 40:1"),
        (600, 600, False, r"608x608|369664 network pixels.*--max-network-pixels"),
        (300, 300, True, r"up to 50000 pixels \(--max-mask-pixels\)"),
    ],
)
def test_limits_refuse_with_413_naming_the_option(width: int, height: int, masks: bool, message: str) -> None:
    with pytest.raises(ServiceError, match=message) as info:
        LIMITS.check(ImageHeader("PNG", width, height), "x.png", masks=masks)
    assert info.value.status_code == 413


def test_limits_pass_and_cost_grows_with_what_is_asked() -> None:
    header = ImageHeader("PNG", 320, 128)
    assert LIMITS.check(header, "x.png", masks=True) == 128 * 320
    plain = LIMITS.cost(header)
    assert plain > 128 * 320 * 4 * 4  # at least the float32 maps
    assert LIMITS.cost(header, masks=True) > plain and LIMITS.cost(header, overlay=True) > plain
    assert LIMITS.cost(header, encoded=1000) == plain + 1000
    # a 1-pixel-high strip is padded to the stride: it costs about half of a 32-pixel-high one, not 1/32
    assert LIMITS.cost(ImageHeader("PNG", 1_000, 1)) > LIMITS.cost(ImageHeader("PNG", 1_000, 32)) / 2


def test_budget_admits_waits_and_refuses() -> None:
    budget = MemoryBudget(100, wait_s=0.2)

    async def _run() -> None:
        with pytest.raises(ServiceError, match="more than the whole budget") as info:
            await budget.acquire(101, "big.png")
        assert info.value.status_code == 413
        first = await budget.acquire(60, "a")
        with pytest.raises(ServiceError, match="memory budget in use") as info:
            await budget.acquire(50, "b")
        assert info.value.status_code == 503 and int(info.value.headers["Retry-After"]) >= 1
        waiting = asyncio.create_task(budget.acquire(50, "c"))
        await asyncio.sleep(0.02)
        assert not waiting.done()
        first.release()
        first.release()  # once only
        second = await waiting
        assert budget.used == 50
        async with budget.reserve(50, "d"):
            assert budget.used == 100
        assert budget.used == 50
        second.release()
        abandoned = await budget.acquire(70, "e")
        assert budget.used == 70
        del abandoned
        gc.collect()  # an abandoned reservation gives its bytes back
        assert budget.used == 0

    asyncio.run(_run())


class _Raw:
    def __init__(self, nbytes: int) -> None:
        self.maps = ({1: np.zeros(nbytes // 4, np.float32)},)
        self.probabilities = np.zeros((1, 0), np.float32)


def test_session_cache_is_bounded_by_bytes() -> None:
    cache = SessionCache(maxsize=10, max_bytes=1000)
    keys = [cache.add(Session(f"{i}", _Raw(400), (1,))) for i in range(3)]
    assert cache.get(keys[0]) is None and cache.get(keys[1]) is not None and cache.get(keys[2]) is not None
    assert cache.nbytes == 800
    with pytest.raises(SessionTooLargeError, match="more than the GUI cache"):
        cache.add(Session("huge", _Raw(2000), (1,)))
    assert len(cache) == 2
