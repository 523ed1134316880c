"""Plain dicts (JSON, YAML) to frozen dataclasses and back, strictly: the one typed-config layer.

``from_dict(cls, data, dialect)`` builds ``cls`` from its type hints: nested dataclasses, ``tuple[X, ...]`` and
fixed tuples from lists, ``dict[K, V]`` (integer keys also from their JSON strings), unions, ``bool``, ``int``,
``float``, ``str`` and ``Any``. A key the dataclass does not have, a required field that is missing, a mapping
where a value should be and a value of the wrong type are ``ValueError``s naming the key path
(``classifier.train.epochs``, ``classes[2]``, ``segmenters.3``). A type with its own ``from_dict`` classmethod
is built by it. Ranges and choices stay with the dataclasses (``__post_init__``) and their callers; an error a
nested dataclass raises is prefixed with its path.

The manifest and the training recipe read through it; each keeps the dialect its users know (``Dialect``).
``to_dict`` is the inverse: tuples become lists, dict keys strings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Dialect", "from_dict", "to_dict"]


@dataclass(frozen=True)
class Dialect:
    """How one reader's documents are read: how its errors name places and say what is wrong, and whether
    scalars are type-checked here.

    Attributes:
        name: the place of a key path (``""`` is the whole document), e.g. ``"manifest field 'classes[2]'"``.
        unknown: template with ``{where}``, ``{unknown}`` (the keys, in their order) and ``{allowed}``.
        missing: template with ``{where}`` and ``{missing}``.
        not_mapping: template with ``{where}``, ``{kind}`` (the dataclass name) and ``{got}`` (the value's type).
        bad_key: template with ``{where}`` and ``{key}``, for a key that is not an integer where one must be.
        check_scalars: check ``bool``/``int``/``float``/``str`` values here; False leaves them to the
            dataclasses, which then check (and word) their own fields.
    """

    name: Callable[[str], str]
    unknown: str = "{where}: unknown key(s) {unknown}; allowed: {allowed}"
    missing: str = "{where}: missing key(s) {missing}"
    not_mapping: str = "{where}: expected a mapping for {kind}, got {got}"
    bad_key: str = "{where}: key {key!r} is not an integer"
    check_scalars: bool = True

    @classmethod
    def of_fields(cls, name: Callable[[str], str], **overrides: Any) -> Dialect:
        """The wording of the bundle's JSON documents: ``... has unknown field(s) [...]; allowed fields are
        [...]``, ``... is missing field(s) [...]``, ``... must be an object``."""
        wording = {
            "unknown": "{where} has unknown field(s) {unknown}; allowed fields are {allowed}",
            "missing": "{where} is missing field(s) {missing}",
            "not_mapping": "{where} must be an object, got {got}",
        }
        return cls(name, **(wording | overrides))


def from_dict(cls: type, data: Any, dialect: Dialect, path: str = "", *, required: Sequence[str] = ()) -> Any:
    """Build the dataclass ``cls`` from the mapping ``data`` (see the module docstring).

    Args:
        path: where ``data`` sits in the document (``""``: it is the document; errors ``cls`` itself raises are
            then left for the caller to word, those of nested dataclasses are prefixed with their path).
        required: keys ``data`` must hold although ``cls`` has defaults for them.

    Raises:
        ValueError: naming the key path, in ``dialect``.
    """
    where = dialect.name(path)
    if not isinstance(data, Mapping):
        raise ValueError(dialect.not_mapping.format(where=where, kind=cls.__name__, got=type(data).__name__))
    fields = dataclasses.fields(cls)
    allowed = [f.name for f in fields]
    needed = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in (*required, *needed) if k not in data]
    if missing:
        raise ValueError(dialect.missing.format(where=where, missing=missing))
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ValueError(dialect.unknown.format(where=where, unknown=unknown, allowed=allowed))
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, dialect, _join(path, k)) for k, v in data.items()}
    if not path:
        return cls(**kwargs)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


def to_dict(value: Any) -> Any:
    """Plain, JSON/YAML-ready form of a dataclass (recursively; tuples become lists, dict keys strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_dict(v) for k, v in value.items()}
    return value


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _convert(tp: Any, value: Any, dialect: Dialect, path: str) -> Any:
    """``value`` as the annotated type ``tp``."""
    where = dialect.name(path)
    if isinstance(tp, type) and callable(getattr(tp, "from_dict", None)):
        try:
            return tp.from_dict(value)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, dialect, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own error says more than "does not match"
            return _convert(options[0], value, dialect, path)
        errors = []
        for arg in options:
            try:
                return _convert(arg, value, dialect, path)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {value!r} does not match {tp}: {'; '.join(errors)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} must be a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, dialect, f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(a, v, dialect, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping, got {type(value).__name__}")
        key_type, value_type = typing.get_args(tp)
        out = {}
        for key, item in value.items():
            if key_type is int:  # JSON and YAML round trips may write integer keys as strings
                if isinstance(key, str) and key.lstrip("-").isdigit():
                    key = int(key)
                if isinstance(key, bool) or not isinstance(key, int):
                    raise ValueError(dialect.bad_key.format(where=where, key=key))
            out[_convert(key_type, key, dialect, f"{path} key")] = _convert(value_type, item, dialect, _join(path, key))
        return out
    return _scalar(tp, value, where) if dialect.check_scalars else value


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise ValueError(f"{where}: unsupported config type {tp}")
