"""Service settings: environment variables with the ``CASCADE_`` prefix, overridden by ``cascade serve`` options."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.imageio import DEFAULT_MAX_PIXELS

__all__ = ["ServiceSettings", "default_state_dir"]


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/cascade`` or ``~/.local/state/cascade``: where jobs and samples live by default."""
    base = os.environ.get("XDG_STATE_HOME")
    return (Path(base) if base else Path.home() / ".local" / "state") / "cascade"


class ServiceSettings(BaseSettings):
    """Everything the service reads at start-up.

    Every field can be set as an environment variable ``CASCADE_<FIELD>`` (e.g. ``CASCADE_MAX_BATCH_SIZE=8``)
    or as a ``cascade serve`` option; options win over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="CASCADE_", extra="ignore", frozen=True)

    bundle: str | None = Field(
        None,
        description="Bundle file or directory, or the name of a shipped bundle (demo, neu-seg; see "
        "cascade.embedded.embedded_bundle_names); None serves the embedded demo bundle.",
    )
    host: str = Field("127.0.0.1", description="Interface uvicorn binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    device: str = Field("auto", description="Torch device: auto, cpu, cuda, cuda:N.")
    runtime: str = Field("auto", description="Inference runtime (auto, torch, onnx, openvino; the predictor checks).")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Inference workers, each with its own predictor (None: one per CPU core on CPU, one on a GPU).",
    )
    threads: int | None = Field(
        None, ge=1, description="Intra-op threads per worker's runtime (None: cores / workers on CPU, so 1 by default)."
    )

    max_batch_size: int = Field(
        4, ge=1, le=256, description="Most images merged into one predictor call (raise it on a GPU)."
    )
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="Longest wait for more requests once one arrived.")
    queue_size: int = Field(64, ge=1, description="Interactive images allowed to wait; beyond that 503 + Retry-After.")
    request_timeout_s: float = Field(60.0, gt=0, description="Per-request inference deadline; beyond it 504.")

    max_upload_mb: float = Field(32.0, gt=0, description="Largest request body in MiB (413 beyond).")
    max_files: int = Field(256, ge=1, description="Most images in one /predict/batch request or zip (413 beyond).")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Largest decoded image (decompression bombs).")
    max_aspect_ratio: float = Field(
        100.0, ge=1, description="Longest over shortest image side (thin images cost far more once padded); 413."
    )
    max_network_pixels: int = Field(
        48_000_000, ge=1, description="Largest padded/tiled network input of one image, in pixels (413 beyond)."
    )
    max_mask_pixels: int = Field(
        16_000_000, ge=1, description="Largest image for which mask/overlay PNGs are drawn (413 beyond)."
    )
    memory_budget_mb: float = Field(
        3072.0,
        gt=0,
        description="Estimated memory all requests in flight may hold together, MiB: a request alone above it 413, "
        "one waiting longer than budget_wait_s for room 503 + Retry-After.",
    )
    budget_wait_s: float = Field(10.0, ge=0, description="Longest wait for room in the memory budget.")

    api_key: SecretStr | None = Field(None, description="When set, required as X-API-Key or Authorization: Bearer.")
    data_root: Path | None = Field(None, description="Folder jobs may only read below this directory.")
    job_batch_size: int = Field(
        2, ge=1, le=256, description="Images per folder-job batch (bounds how long a request waits behind a job)."
    )
    state_dir: Path = Field(default_factory=default_state_dir, description="Jobs and generated samples live here.")
    samples_dir: Path | None = Field(None, description="GUI samples folder; None generates synthetic samples.")
    num_samples: int = Field(6, ge=0, le=64, description="Synthetic samples generated for the GUI.")
    gui_cache_size: int = Field(16, ge=1, description="Raw outputs kept for the GUI's threshold sliders (LRU).")
    gui_cache_mb: float = Field(
        256.0, gt=0, description="Most MiB those raw outputs (float32 maps) may hold together (LRU; 413 for one above)."
    )

    max_header_kb: int = Field(64, ge=1, description="Largest request line + headers in KiB (uvicorn h11; 431 beyond).")
    limit_concurrency: int = Field(
        512, ge=1, description="Most open connections + running requests; beyond, uvicorn answers 503 at once."
    )
    timeout_keep_alive_s: int = Field(5, ge=1, description="Idle keep-alive connections are closed after this.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must send a request's complete headers within this (slow clients)."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="Longest pause between two chunks of a request body, s (408 beyond; slow clients)."
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("bundle", mode="before")
    @classmethod
    def _bundle_as_text(cls, value: object) -> object:
        if value == "":
            return None
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def memory_budget_bytes(self) -> int:
        """``memory_budget_mb`` in bytes."""
        return int(self.memory_budget_mb * 1024 * 1024)

    @property
    def jobs_dir(self) -> Path:
        """Directory of the persistent folder jobs."""
        return self.state_dir / "jobs"
