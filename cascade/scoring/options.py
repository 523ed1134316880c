"""What a folder run asks for, whichever engine runs it: ``ScoreOptions``.

The local engine (``score_folder``) and the Ray engine (``score_folder_ray``) write the same files from the
same batches, so the options that decide those files (batch size, layout, mode, masks, resume, fsync) and the
stall timeout are one value, built once by each caller (the CLI from its flags, the service from a job
record) and validated here. How the work is spread (local: predictors, decoding threads, prefetch; Ray:
address, actors, threads, device, runtime) stays a parameter of each engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cascade.formats import Layout
from cascade.gate import check_mode
from cascade.scoring.watchdog import DEFAULT_STALL_TIMEOUT_S, check_stall_timeout

__all__ = ["ScoreOptions"]


@dataclass(frozen=True)
class ScoreOptions:
    """Options of a folder run shared by both engines; the output and resume contract is ``cascade.scoring``'s.

    The run's ``cancel`` event and ``progress`` callback are not options but arguments of each engine call:
    they belong to one run (an event to set, a callback into the caller's state), while a ``ScoreOptions`` is a
    plain value that can be compared, logged and reused for several runs (``dataclasses.replace`` for a variant).

    Attributes:
        batch_size: images per predictor call. Batches are fixed slices of the listing, so keep it when
            resuming to get byte-identical files (see ``cascade.scoring.job``).
        masks_dir: also write ``masks/<stem>.png`` and ``overlays/<stem>.jpg`` there (``cascade.scoring.masks``;
            on Ray, from the actors); a ``str`` is turned into a ``Path``.
        layout: submission layout.
        mode: predictor mode, one of ``cascade.gate.GATE_MODES`` (``"cascade"`` or ``"segment_all"``).
        resume: continue an existing output of the same job (False: start afresh and replace it).
        fsync: fsync the outputs after every batch.
        stall_timeout_s: seconds without a finished batch after which the run raises ``StalledError`` (on Ray
            the actors' start-up counts: keep it well above it); None: wait forever.

    Raises:
        ValueError: a field is out of range or of the wrong type; the message names it and what is allowed.
    """

    batch_size: int = 4
    masks_dir: Path | None = None
    layout: Layout = Layout.IMAGE_CLASS
    mode: str = "cascade"
    resume: bool = True
    fsync: bool = True
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r}; allowed: an integer >= 1")
        if not isinstance(self.layout, Layout):
            allowed = ", ".join(f"Layout.{layout.name}" for layout in Layout)
            raise ValueError(f"layout={self.layout!r}; allowed: {allowed}")
        check_mode(self.mode)
        for name in ("resume", "fsync"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: True or False")
        if self.masks_dir is not None and not isinstance(self.masks_dir, Path):
            if not isinstance(self.masks_dir, str):
                raise ValueError(f"masks_dir={self.masks_dir!r}; allowed: a folder path or None")
            object.__setattr__(self, "masks_dir", Path(self.masks_dir))
        object.__setattr__(self, "stall_timeout_s", check_stall_timeout(self.stall_timeout_s))
