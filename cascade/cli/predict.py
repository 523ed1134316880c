"""CLI command ``cascade predict``: score a folder into a submission CSV, or print one image's prediction.

Exit codes: 0 success; 1 the run was refused (e.g. an existing ``--out`` from another job) or failed;
2 some images could not be read (they are listed in ``<out stem>.errors.csv``; click also uses 2 for a
bad command line); 3 stuck: no batch finished for ``--stall-timeout`` seconds (every thread's stack is
printed on stderr; the output is resumable); 130 stopped by Ctrl-C (the output is resumable: rerun the
same command).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from cascade.cli.common import load_predictor_or_exit, runtime_help
from cascade.constants import RUNTIME_NAMES

if TYPE_CHECKING:
    from cascade.scoring.options import ScoreOptions
    from cascade.scoring.watchdog import StalledError

__all__ = ["register"]

_LAYOUTS = ("image_class", "long")
_ENGINES = ("local", "ray")
EXIT_REFUSED, EXIT_IMAGES_FAILED, EXIT_STALLED, EXIT_INTERRUPTED = 1, 2, 3, 130


def _fail(message: str, code: int = EXIT_REFUSED) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r}; allowed: {', '.join(allowed)}", param_hint=name)
    return value


def _parse_actors(value: str) -> int | tuple[int, int]:
    try:
        parts = [int(p) for p in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1 and parts[0] >= 1:
        return parts[0]
    if len(parts) == 2 and 1 <= parts[0] <= parts[1]:
        return (parts[0], parts[1])
    raise typer.BadParameter(f"{value!r}; allowed: N or MIN,MAX with 1 <= MIN <= MAX", param_hint="--actors")


class _GracefulInterrupt:
    """First Ctrl-C sets ``event`` (stop after the current batch); the second one interrupts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        typer.echo("\nstopping after the current batch (Ctrl-C again to stop now); rerun to resume", err=True)

    def __enter__(self) -> _GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _predict_file(path: Path, predictor: Any, *, mode: str, as_json: bool, timings: bool, masks: Path | None) -> Any:
    """Predict one file, print it and return its ``ImagePrediction``."""
    from cascade.imageio import ImageDecodeError, read_image
    from cascade.scoring import write_mask_outputs

    try:
        image = read_image(path)
    except ImageDecodeError as exc:
        raise _fail(str(exc), EXIT_IMAGES_FAILED) from exc
    pred = predictor.predict([image], image_ids=[path.name], mode=mode)[0]
    if masks is not None:
        write_mask_outputs(masks, image, pred)
    if as_json:
        typer.echo(json.dumps(pred.to_dict(include_timings=timings), indent=2))
        return pred
    typer.echo(f"{pred.image_id} ({pred.width}x{pred.height})")
    for c in pred.classes:
        typer.echo(f"  class {c.class_id} {c.name:<15} p={c.probability:.3f} present={c.present!s:<5} area={c.area}")
    if pred.ood_score is not None:
        verdict = "in distribution" if pred.in_distribution else "OUT OF DISTRIBUTION: unlike the training images"
        typer.echo(f"  ood_score={pred.ood_score:.3f} ({verdict})")
    return pred


def _ood_line(summary: Any) -> str:
    """How many scored images were out of distribution (``cascade.ood``), naming the first few."""
    share = summary.ood_flagged / summary.ood_scored
    line = f"out of distribution: {summary.ood_flagged}/{summary.ood_scored} images ({share:.1%})"
    if summary.ood_flagged:
        more = summary.ood_flagged - len(summary.ood_examples)
        line += f", e.g. {', '.join(summary.ood_examples)}" + (f" and {more} more" if more > 0 else "")
        line += ": unlike the bundle's training images, treat their predictions with suspicion"
    return line


def _exit_stalled(error: StalledError, out: Path) -> NoReturn:
    """Print the thread dump and a one-line error on stderr, then leave at once with ``EXIT_STALLED``.

    ``os._exit``, not ``typer.Exit``: the stuck predictor threads belong to a thread pool that the interpreter
    joins on a normal exit, so a normal exit would hang just like the run did.
    """
    typer.echo(f"thread dump ({error.what} stuck for {error.idle_s:.0f} s):\n{error.thread_dump}", err=True)
    typer.echo(f"error: {error}; {out} is resumable: rerun the same command", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STALLED)


def _run_folder(
    path: Path, out: Path, predictors: list[Any] | None, options: ScoreOptions, engine: dict[str, Any], as_json: bool
) -> None:
    """Score ``path`` into ``out`` on the local engine with ``predictors``, or on Ray (None) with ``engine`` kwargs."""
    from tqdm import tqdm

    from cascade.scoring import (
        RayUnavailableError,
        ResumeError,
        ScoreProgress,
        StalledError,
        score_folder,
        score_folder_ray,
    )

    bars: list[tqdm] = []

    def _progress(p: ScoreProgress) -> None:
        if not bars:  # the first tick comes before any batch, with the resumed count
            bars.append(tqdm(total=p.total, initial=p.done, unit="img", desc="scoring", dynamic_ncols=True))
        bar = bars[0]
        bar.update(p.done - bar.n)
        bar.set_postfix(failed=p.failed, refresh=False)

    stalled: StalledError | None = None
    try:
        with _GracefulInterrupt() as interrupt:
            callbacks = {"cancel": interrupt.event, "progress": _progress}
            if predictors is None:
                summary = score_folder_ray(path, out, options=options, **callbacks, **engine)
            else:
                summary = score_folder(path, out, predictors, options=options, **callbacks, **engine)
    except StalledError as exc:
        stalled = exc
    except (ResumeError, RayUnavailableError, ValueError) as exc:  # ValueError: e.g. two images share a stem
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt as exc:
        raise _fail(f"interrupted; {out} is resumable: rerun the same command", EXIT_INTERRUPTED) from exc
    finally:
        for bar in bars:
            bar.close()
    if stalled is not None:
        _exit_stalled(stalled, out)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        typer.echo(
            f"{summary.done}/{summary.total} images done in {summary.elapsed_s:.1f} s "
            f"({summary.scored} scored at {summary.images_per_second:.2f} img/s, {summary.resumed} resumed, "
            f"{summary.failed} unreadable) -> {summary.out_csv}"
        )
        if summary.ood_scored:
            typer.echo(_ood_line(summary))
        for err in summary.errors:
            typer.echo(f"unreadable: {err.image_id}: {err.reason}", err=True)
        if summary.errors_csv is not None:
            typer.echo(f"{summary.failed} unreadable image(s) listed in {summary.errors_csv}", err=True)
    if summary.cancelled:
        raise _fail(f"stopped early; {out} is resumable: rerun the same command", EXIT_INTERRUPTED)
    if summary.failed:
        raise typer.Exit(EXIT_IMAGES_FAILED)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("predict")
    def predict(
        path: Path = typer.Argument(
            ..., exists=True, help="A folder of images (scored into --out) or one image file (printed)."
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Submission CSV to write; required for a folder. Rerun to resume."
        ),
        bundle: Path | None = typer.Option(
            None, "--bundle", "-b", help="Bundle file or directory, or a shipped bundle's name (default: demo)."
        ),
        batch_size: int = typer.Option(4, "--batch-size", min=1, help="Images per predictor call."),
        workers: int = typer.Option(2, "--workers", min=1, help="Decoding threads (local engine)."),
        parallel: int = typer.Option(
            0,
            "--parallel",
            min=0,
            help="Predictors running batches side by side (local engine); 0: one per core on CPU "
            "(with --threads 1), one on GPU.",
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
        runtime: str = typer.Option("auto", "--runtime", help=runtime_help()),
        threads: int | None = typer.Option(
            None, "--threads", min=1, help="Inference threads per predictor (per actor on Ray); default 1 on CPU."
        ),
        layout: str = typer.Option("image_class", "--layout", help="image_class (ImageId_ClassId) or long."),
        masks: Path | None = typer.Option(
            None,
            "--masks",
            help="Also write masks/<stem>.png (class bitmask PNG) and overlays/<stem>.jpg (with a legend) here.",
        ),
        mode: str = typer.Option("cascade", "--mode", help="cascade (gated) or segment_all."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out instead of resuming it."),
        engine: str = typer.Option("local", "--engine", help="local (this machine) or ray (Ray Data)."),
        address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: start locally)."),
        actors: str = typer.Option("1,2", "--actors", help="Ray actor pool: N or MIN,MAX."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (the prediction, or the run summary)."),
        timings: bool = typer.Option(False, "--timings", help="Include stage timings in a single image's JSON."),
        stall_timeout: float = typer.Option(
            600.0,
            "--stall-timeout",
            min=0.0,
            envvar="CASCADE_STALL_TIMEOUT",
            help="Seconds without a finished batch after which a folder run counts as stuck: it names the images "
            "still out, prints every thread's stack and exits 3 (both engines; on Ray the actors' start-up counts; "
            "0: wait forever).",
        ),
    ) -> None:
        """Score a folder of images into a Kaggle submission (resumable), or predict one image.

        A folder is scored in file-name order into --out, which is fsync'ed after every batch.
        After Ctrl-C or kill -9, rerun the same command to resume (same --batch-size, --threads, --runtime: same bytes).
        Unreadable images are listed in <out stem>.errors.csv and the exit code is 2.
        A run stuck for --stall-timeout seconds prints every thread's stack and exits 3.
        """
        layout_name = _check_choice("--layout", layout, _LAYOUTS)
        _check_choice("--engine", engine, _ENGINES)
        _check_choice("--mode", mode, ("cascade", "segment_all"))
        _check_choice("--runtime", runtime, ("auto", *RUNTIME_NAMES))
        actor_pool = _parse_actors(actors)
        from cascade.formats import Layout

        layout_value = Layout.IMAGE_CLASS if layout_name == "image_class" else Layout.LONG
        if path.is_dir():
            if out is None:
                raise typer.BadParameter("scoring a folder needs --out submission.csv", param_hint="--out")
            from cascade.scoring.options import ScoreOptions

            try:
                options = ScoreOptions(
                    batch_size=batch_size,
                    masks_dir=masks,
                    layout=layout_value,
                    mode=mode,
                    resume=not overwrite,
                    stall_timeout_s=stall_timeout or None,
                )
            except ValueError as exc:
                raise _fail(str(exc)) from exc
            if engine == "ray":
                _check_bundle(bundle)  # before starting Ray: a missing bundle is one line, not an actor's traceback
                _quiet_ray()
                ray_engine = {
                    "bundle": bundle,
                    "address": address,
                    "actors": actor_pool,
                    "threads": threads or 1,
                    "device": "cpu" if device == "auto" else device,
                    "runtime": runtime,
                    # Starting Ray here: no dashboard, worker logs stay in Ray's log folder. A cluster keeps its own.
                    "init_kwargs": {"include_dashboard": False, "log_to_driver": False} if address is None else {},
                }
                _run_folder(path, out, None, options, ray_engine, as_json)
                return
            count, per_predictor = _local_parallelism(device, parallel, threads)
            # Built one after the other (each warms its engine up serially, see cascade.runtimes.warmup).
            predictors = [_load_predictor(bundle, device, runtime, per_predictor) for _ in range(count)]
            _run_folder(path, out, predictors, options, {"workers": workers}, as_json)
            return
        predictor = _load_predictor(bundle, device, runtime, threads)
        pred = _predict_file(path, predictor, mode=mode, as_json=as_json, timings=timings, masks=masks)
        if out is not None:
            from cascade.formats import format_image_rows, submission_header

            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(
                submission_header(layout_value)
                + format_image_rows(pred.image_id, pred.rles, layout_value, pred.class_ids)
            )


def _quiet_ray() -> None:
    """Ray Data's own progress bars and INFO logs would garble the tqdm bar; keep warnings."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        import ray.data
    except ImportError:
        return  # score_folder_ray raises a clear RayUnavailableError
    ray.data.DataContext.get_current().enable_progress_bars = False


def _local_parallelism(device: str, parallel: int, threads: int | None) -> tuple[int, int | None]:
    """``(predictors, threads per predictor)`` for the local engine.

    On CPU, small networks use cores better as several single-threaded predictors on separate batches than as
    one predictor with intra-op threads (and far better when other processes share the cores).
    """
    import os

    from cascade.device import uses_gpu

    cores = os.cpu_count() or 1
    if uses_gpu(device):
        return parallel or 1, threads
    if parallel == 0:
        per = threads or 1
        return max(1, cores // per), per
    return parallel, threads or max(1, cores // parallel)


def _load_predictor(bundle: Path | None, device: str, runtime: str, threads: int | None) -> Any:
    return load_predictor_or_exit(bundle, device=device, runtime=runtime, threads=threads, code=EXIT_REFUSED)


def _check_bundle(bundle: Path | None) -> None:
    from cascade.bundle import BundleError, read_manifest
    from cascade.cli.common import bundle_error
    from cascade.embedded import resolve_bundle

    try:
        read_manifest(resolve_bundle(bundle))
    except (BundleError, OSError) as err:
        raise _fail(bundle_error(bundle, err)) from err
