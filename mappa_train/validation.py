"""Config checks driven by annotations: a value is checked against its field's (or parameter's) type hint.

YAML reads ``1e-4`` as a string and ``'false'`` is a string too; Python's dataclasses check nothing, so without
this a wrong value fails deep in training (or, for a bool, silently means ``True``). Every message names the key,
what it holds and how to write it instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key and the fix."""


def _name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit ``hint`` (``None`` when it does). Numbers are never read from strings."""
    if hint is Any or hint is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        problems = [type_problem(value, a) for a in args]
        if any(p is None for p in problems):
            return None
        return f"is {value!r}, which is none of {' | '.join(_name(a) for a in args)}"
    if hint is type(None):
        return None if value is None else f"must be null, got {value!r}"
    if hint is bool:
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            return f"is the string {value!r}, not a boolean; write {str(value.strip().lower() in ('true', 'yes', 'on')).lower()} without quotes"
        return f"must be true or false, got {value!r}"
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        if isinstance(value, float) and value.is_integer():
            return f"must be a whole number, got {value!r}; write {int(value)}"
        return f"must be a whole number, got {value!r}" + _string_number_fix(value, int)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None
        return f"must be a number, got {value!r}" + _string_number_fix(value, float)
    if hint is str:
        return None if isinstance(value, str) else f"must be a string, got {value!r}; quote it"
    if hint is Path or (isinstance(hint, type) and issubclass(hint, Path)):
        return None if isinstance(value, str | Path) else f"must be a path (a string), got {value!r}"
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            return f"must be a list, e.g. [a, b], got {value!r}"
        inner = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else Any
        for i, item in enumerate(value):
            problem = type_problem(item, inner)
            if problem:
                return f"item {i} {problem}"
        return None
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, dict):
            return f"must be a mapping (key: value), got {value!r}"
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        for k, v in value.items():
            problem = type_problem(k, key_hint) or type_problem(v, value_hint)
            if problem:
                return f"entry {k!r} {problem}"
        return None
    if isinstance(hint, type):
        return None if isinstance(value, hint) else f"must be a {hint.__name__}, got {value!r}"
    return None  # an annotation this checker does not understand (a TypeVar, a Protocol...): not checked


def _string_number_fix(value: Any, kind: type) -> str:
    if not isinstance(value, str):
        return ""
    try:
        number = kind(value)
    except ValueError:
        return ""
    shown = str(number)
    if kind is float and "e" in value.lower():  # YAML 1.1 reads 1e-4 as a string: it needs a dot and a sign
        mantissa, _, exponent = value.strip().lower().partition("e")
        mantissa += "" if "." in mantissa else ".0"
        shown = f"{mantissa}e{exponent if exponent[:1] in '+-' else '+' + exponent}"
    return f" (a string); write {shown} without quotes"


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_fields(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Unknown keys and wrong types in ``data`` for the dataclass ``cls``, all reported at once."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    problems = []
    unknown = [key for key in data if key not in hints]
    for key in unknown:
        problems.append(f"unknown config key {key!r}{_suggest(str(key), known)}")
    for key, value in data.items():
        if key in hints:
            problem = type_problem(value, hints[key])
            if problem:
                problems.append(f"{key}: {problem}")
    if problems:
        listing = f" (known keys: {', '.join(known)})" if unknown else ""
        raise ConfigError(f"{where}: " + "; ".join(problems) + listing)


def check_choices(config: Any, choices: Mapping[str, tuple[str, ...]], where: str) -> None:
    for key, allowed in choices.items():
        value = getattr(config, key)
        if value not in allowed:
            raise ConfigError(
                f"{where}: {key}={value!r} must be one of {', '.join(allowed)}{_suggest(str(value), list(allowed))}"
            )


def check_ranges(
    config: Any, ranges: Mapping[str, tuple[float | None, float | None, str]], where: str
) -> None:
    for key, (low, high, meaning) in ranges.items():
        value = getattr(config, key)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            note = f" ({meaning})" if meaning else ""
            raise ConfigError(f"{where}: {key} must be {bounds}{note}, got {value!r}")


def _parameters(func: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """Keyword parameters of ``func`` with their type hints, and whether it takes ``**kwargs``."""
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that does not resolve here: check names only
        hints = {}
    params = {
        name: hints.get(name, Any)
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"
    }
    takes_more = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return params, takes_more


def env_parameters(env_id: str) -> dict[str, Any] | None:
    """What ``mappa_envs.make(env_id, **kwargs)`` accepts, ``name -> hint``; ``None`` when it takes anything.

    A factory that forwards ``**kwargs`` is followed into the class it returns (the pipelines' ``raw_env`` builds
    a ``PipelineEnv``), so a misspelt ``cell_timeout_s`` is caught here and not deep inside the engine.
    """
    import importlib

    import mappa_envs
    from mappa_envs.registry import registry

    spec = registry[env_id]
    module, _, name = spec.entry_point.partition(":")
    factory = getattr(importlib.import_module(module), name)
    params, takes_more = _parameters(factory)
    if takes_more:
        returned = (
            typing.get_type_hints(factory).get("return") if hasattr(factory, "__annotations__") else None
        )
        if not isinstance(returned, type):
            return None
        more, takes_more = _parameters(returned.__init__)
        more.pop("spec", None)
        params = {**more, **params}
        if takes_more:
            return None
    make_params, _ = _parameters(mappa_envs.make)
    make_params.pop("env_id", None)
    return {**params, **make_params}


def check_env_kwargs(env_id: str, kwargs: Mapping[str, Any], reserved: Mapping[str, str], where: str) -> None:
    """``env_kwargs`` against the env's signature: unknown names, values of the wrong type, keys the trainer sets."""
    try:
        accepted = env_parameters(env_id)
    except KeyError as e:
        raise ConfigError(f"{where}: env: {e.args[0]}") from None
    except ValueError as e:
        raise ConfigError(f"{where}: env: {e}") from None
    for key, value in kwargs.items():
        if key in reserved:
            raise ConfigError(
                f"{where}: env_kwargs.{key} is set by the trainer from the config key {reserved[key]}; "
                f"set that instead and drop env_kwargs.{key}"
            )
        if accepted is None:
            continue
        if key not in accepted:
            names = sorted(k for k in accepted if k not in reserved)
            raise ConfigError(
                f"{where}: env_kwargs.{key} is not an argument of {env_id}{_suggest(key, names)} "
                f"(it takes: {', '.join(names)})"
            )
        problem = type_problem(value, accepted[key])
        if problem:
            raise ConfigError(f"{where}: env_kwargs.{key} {problem}")
