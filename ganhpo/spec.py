"""The one parser of user input: TOML files -> frozen, typed objects.

Only this module reads raw TOML. Unknown keys are rejected with the closest valid key,
wrong types and bad values with the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ganhpo.errors import ConfigError
from ganhpo.registry import closest
from ganhpo.train.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["from_dict", "load_toml", "load_train_config", "parse_train_config"]

T = TypeVar("T")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read: {e}") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}; fix the syntax there") from e


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int, float, bool, str, X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _convert(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table ([{key}]), not {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} = {value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r} must be a string")
        return value
    raise TypeError(f"unsupported annotation {_type_name(tp)} for {key}")  # internal


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a TOML table, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            hint = closest(key, names)
            where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            suggestion = f"did you mean {hint!r}?" if hint else f"valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{prefix}{key}' in {where}; {suggestion}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def parse_train_config(data: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from parsed TOML (sections dataset, model, train, eval)."""
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as e:
        raise type(e)(f"{source}: {e}") from e


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a ``ganhpo train`` configuration file."""
    return parse_train_config(load_toml(path), source=str(path))
