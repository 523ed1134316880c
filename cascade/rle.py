"""Kaggle run-length encoding of binary masks, vectorized with numpy.

Pixels are numbered 1..H*W top to bottom, then left to right (column-major: ``mask.T.flatten()``), and
a mask is written as space-separated ``start length`` pairs. ``encode`` never loops in Python per pixel:
run boundaries come from comparing each pixel with its column-major predecessor, and the numbers are
joined as text. ``decode`` checks the bytes with numpy, parses them with numpy's C text reader and
expands the runs with one ``np.repeat``.

Decoding is strict: it raises ``RLEError`` (a ``ValueError``) naming the offending token for an odd
number of tokens, a token that is not a decimal integer, ``start < 1``, ``length < 1``, unsorted or
overlapping runs and runs past ``H * W``. Runs that touch (``1 2 3 2``) are accepted, as Kaggle accepts
them (its rule is "sorted, positive, no pixel twice"); ``encode`` never writes them, so re-encoding a
decoded mask gives the canonical string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NoReturn

import numpy as np

from cascade.constants import IMAGE_SHAPE

__all__ = [
    "RLE_ERROR_KINDS",
    "RLEError",
    "decode",
    "decode_runs",
    "decode_stack",
    "encode",
    "encode_stack",
    "rle_area",
]

RLE_ERROR_KINDS: tuple[str, ...] = (
    "odd_count",
    "non_integer",
    "start_below_1",
    "length_below_1",
    "unsorted",
    "overlap",
    "out_of_range",
)
"""Every value of ``RLEError.kind``."""

_MAX_DIGITS = 18  # int64 holds every 18-digit decimal
_POW10 = 10 ** np.arange(_MAX_DIGITS + 1, dtype=np.int64)
_SPACE, _ZERO = 32, 48
_SORT_EDGES = 16384  # run boundaries; up to this many they are sorted into column-major order
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 13, 32]] = True
_TOKEN_RE = re.compile(r"[^ \t\r\n]+")
_INT_RE = re.compile(r"-?[0-9]+")


class RLEError(ValueError):
    """A malformed RLE string.

    Attributes:
        kind: one of ``RLE_ERROR_KINDS``.
        token: 1-based index of the offending token (0 when the string as a whole is at fault).
    """

    def __init__(self, message: str, kind: str, token: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.token = token


def encode(mask: np.ndarray) -> str:
    """Encode one mask as Kaggle RLE.

    Args:
        mask: ``(H, W)`` bool mask (integer masks are accepted, nonzero = foreground).

    Returns:
        ``"start length start length ..."``, 1-based column-major starts; ``""`` for an empty mask.
    """
    mask = _check_mask(mask, ndim=2)
    height = mask.shape[0]
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return ""
    # Only the columns from the first to the last with foreground matter.
    first_col, last_col = int(columns[0]), int(columns[-1])
    edges = _run_edges(mask[:, first_col : last_col + 1])
    edges = edges.astype(np.uint32 if mask.size < 2**32 else np.uint64)  # 1-based starts stay <= H * W
    starts = edges[0::2] + edges.dtype.type(1 + first_col * height)
    lengths = edges[1::2] - edges[0::2]
    return _format_runs(starts, lengths)


def _run_edges(mask: np.ndarray) -> np.ndarray:
    """0-based column-major indices where runs start and end (exclusive), alternating, of ``(H, K)`` bool."""
    # Each pixel against its column-major predecessor (the pixel above, or the previous column's last),
    # computed on C-ordered rows; few boundaries are then put in column-major order by a small sort.
    previous = np.empty(mask.shape, dtype=bool)
    previous[1:] = mask[:-1]
    previous[0, 1:] = mask[-1, :-1]
    previous[0, 0] = False
    changed = mask != previous
    if np.count_nonzero(changed) <= _SORT_EDGES:
        rows, cols = np.divmod(np.flatnonzero(changed), mask.shape[1])
        edges = np.sort(cols * mask.shape[0] + rows)
        return np.append(edges, mask.size) if mask[-1, -1] else edges
    # Many boundaries: a column-major copy and one comparison with the shifted sequence.
    flat = mask.T.reshape(-1).view(np.uint8)
    padded = np.zeros(flat.size + 2, dtype=np.uint8)
    padded[1:-1] = flat
    return np.flatnonzero(padded[1:] != padded[:-1])


def decode(rle: str, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Decode Kaggle RLE into a mask.

    Args:
        rle: RLE string; empty or whitespace-only means an empty mask.
        shape: ``(H, W)`` of the mask.

    Returns:
        ``(H, W)`` bool mask; a Fortran-ordered view (the RLE's own pixel order, as pycocotools returns),
        use ``np.ascontiguousarray`` where C order matters.

    Raises:
        RLEError: the string is malformed or a run leaves the ``H * W`` pixels.
    """
    height, width = _check_shape(shape)
    starts, lengths = decode_runs(rle, n_pixels=height * width)
    # Alternating background/foreground runs, expanded in one np.repeat over the column-major pixels.
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[1:-1:2] = lengths
    counts[0:-1:2] = starts - 1
    counts[2:-1:2] -= starts[:-1] - 1 + lengths[:-1]
    counts[-1] = height * width - (int(starts[-1] - 1 + lengths[-1]) if starts.size else 0)
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T


def decode_runs(rle: str, n_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate an RLE string into its runs.

    Args:
        rle: RLE string.
        n_pixels: ``H * W``; when given, runs past it are an error.

    Returns:
        ``(starts, lengths)``, two ``(R,)`` int64 arrays, starts 1-based.

    Raises:
        RLEError: the string is malformed.
    """
    if not isinstance(rle, str):
        raise TypeError(f"RLE must be a str, got {type(rle).__name__}")
    numbers = _parse_numbers(rle)
    if numbers is None or numbers.size % 2:
        _raise_first_error(rle, n_pixels)
    starts, lengths = numbers[0::2], numbers[1::2]
    ends = starts + lengths  # exclusive, 1-based
    ok = bool(starts.size == 0 or (starts.min() >= 1 and lengths.min() >= 1))
    ok = ok and bool(np.all(starts[1:] >= ends[:-1]))
    ok = ok and (n_pixels is None or starts.size == 0 or int(ends[-1]) - 1 <= n_pixels)
    if not ok:
        _raise_first_error(rle, n_pixels)
    return starts, lengths


def rle_area(rle: str, shape: tuple[int, int] | None = None) -> int:
    """Number of foreground pixels of an RLE string (sum of its lengths), after validating it.

    Args:
        rle: RLE string.
        shape: ``(H, W)``; when given, runs past ``H * W`` are an error.

    Raises:
        RLEError: the string is malformed.
    """
    n_pixels = None if shape is None else int(np.prod(_check_shape(shape)))
    return int(decode_runs(rle, n_pixels=n_pixels)[1].sum())


def encode_stack(masks: np.ndarray) -> list[str]:
    """Encode a stack of per-class masks.

    Args:
        masks: ``(4, H, W)`` bool masks, index ``k`` holding class id ``k + 1`` (any leading count works).

    Returns:
        One RLE string per mask, in order.
    """
    masks = _check_mask(masks, ndim=3)
    return [encode(m) for m in masks]


def decode_stack(rles: Sequence[str], shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Decode per-class RLE strings into a stack of masks.

    Args:
        rles: one RLE string per class (4 for Severstal), ``""`` for an absent class.
        shape: ``(H, W)`` of each mask.

    Returns:
        ``(len(rles), H, W)`` bool masks.

    Raises:
        RLEError: a string is malformed (the message names the class index).
    """
    if isinstance(rles, str):
        raise TypeError("decode_stack expects a sequence of RLE strings, got a single str")
    height, width = _check_shape(shape)
    out = np.zeros((len(rles), height, width), dtype=bool)
    for k, rle in enumerate(rles):
        if isinstance(rle, str) and not rle.strip():
            continue
        try:
            out[k] = decode(rle, (height, width))
        except RLEError as exc:
            raise RLEError(f"mask {k} (class id {k + 1}): {exc}", exc.kind, exc.token) from exc
    return out


def _check_mask(mask: np.ndarray, ndim: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d mask, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask != 0
    raise ValueError(f"mask dtype must be bool or an integer type, got {mask.dtype}")


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be (H, W) with positive integers, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _format_runs(starts: np.ndarray, lengths: np.ndarray) -> str:
    """Space-separated ``start length`` text of ``(R,)`` increasing ``starts`` and positive ``lengths``.

    A plain join: a hand-written numpy digit formatter was 17x faster on a worst-case checkerboard but made no
    difference end to end (``bench/results/rle.md``), so it went.
    """
    numbers = np.empty(2 * starts.size, dtype=starts.dtype)
    numbers[0::2] = starts
    numbers[1::2] = lengths
    return " ".join(map(str, numbers.tolist()))


def _parse_numbers(rle: str) -> np.ndarray | None:
    """The decimal tokens of ``rle`` as ``(N,)`` int64, or None when a token is not plain digits.

    The bytes are checked first (ASCII digits and whitespace only), so numpy's C text parser then reads
    every token; more than 18 digits saturates it at the int64 maximum, which is rejected too.
    """
    try:
        data = np.frombuffer(rle.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        return None
    is_digit = (data - np.uint8(_ZERO)) < 10
    n_digits = np.count_nonzero(is_digit)
    if n_digits + np.count_nonzero(data == _SPACE) != data.size and not np.all(is_digit | _WHITESPACE[data]):
        return None
    if n_digits == 0:
        return np.zeros(0, dtype=np.int64)
    n_tokens = int(is_digit[0]) + np.count_nonzero(is_digit[1:] > is_digit[:-1])
    numbers = np.fromstring(rle, dtype=np.int64, sep=" ")
    if numbers.size != n_tokens or int(numbers.max()) >= _POW10[_MAX_DIGITS]:
        return None
    return numbers


def _raise_first_error(rle: str, n_pixels: int | None) -> NoReturn:
    """Slow path, on error only: walk the tokens and raise ``RLEError`` for the first problem."""
    tokens = [(m.group(), m.start()) for m in _TOKEN_RE.finditer(rle)]
    previous_end = 0  # exclusive end of the previous run, 1-based
    for index, (text, char) in enumerate(tokens, start=1):
        shown = text if len(text) <= 24 else f"{text[:20]}..."
        where = f"token {index} ({shown!r} at char {char})"
        if not _INT_RE.fullmatch(text):
            raise RLEError(f"invalid RLE: {where} is not a decimal integer", "non_integer", index)
        if len(text.lstrip("-")) > _MAX_DIGITS:
            raise RLEError(f"invalid RLE: {where} has more than {_MAX_DIGITS} digits", "non_integer", index)
        value = int(text)
        if index % 2:  # a start
            if value < 1:
                raise RLEError(f"invalid RLE: {where} is a start < 1", "start_below_1", index)
            if value < previous_end and index > 1:
                start_prev = tokens[index - 3][0]
                kind = "unsorted" if value < int(start_prev) else "overlap"
                raise RLEError(
                    f"invalid RLE: {where}: run starts before the previous run (start {start_prev}) ends at "
                    f"{previous_end - 1} ({'unsorted' if kind == 'unsorted' else 'overlapping'} runs)",
                    kind,
                    index,
                )
            start = value
        else:
            if value < 1:
                raise RLEError(f"invalid RLE: {where} is a length < 1", "length_below_1", index)
            previous_end = start + value
            if n_pixels is not None and previous_end - 1 > n_pixels:
                raise RLEError(
                    f"invalid RLE: {where}: run {start}..{previous_end - 1} goes past the last pixel {n_pixels}",
                    "out_of_range",
                    index,
                )
    if len(tokens) % 2:
        raise RLEError(
            f"invalid RLE: odd number of tokens ({len(tokens)}); expected 'start length' pairs", "odd_count", 0
        )
    raise RLEError(f"invalid RLE: {rle[:80]!r} could not be parsed", "non_integer", 0)  # fast and slow paths disagree
