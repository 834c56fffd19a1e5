"""Coach backends by name: ``"rules"``, ``"openai:MODEL"``, ``"calibrated:<coach>"``, and any a user registers.

A backend is a factory ``(model, **kwargs) -> Coach``; :func:`make_coach` splits ``"<backend>:<model>"`` at the
first colon and calls the factory registered for ``<backend>`` (``model`` is ``""`` for a bare name). A new
backend is one :func:`register_coach` call; nothing here knows what a backend does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappa_envs.coach.base import Coach

CoachSpec = Coach | str
"""A coach, or a name :func:`make_coach` understands (``"rules"``, ``"openai:MODEL"``, a registered backend)."""

Factory = Callable[..., Coach]
_BACKENDS: dict[str, tuple[Factory, bool]] = {}


def register_coach(name: str, factory: Factory, *, needs_model: bool = False) -> None:
    """Make ``make_coach(f"{name}:MODEL")`` (or ``make_coach(name)``) call ``factory(model, **kwargs)``."""
    if not name or ":" in name:
        raise ValueError(f"a coach backend name must be non-empty and contain no ':', got {name!r}")
    _BACKENDS[name] = (factory, needs_model)


def coach_backends() -> list[str]:
    return sorted(_BACKENDS)


def make_coach(coach: CoachSpec, **kwargs: Any) -> tuple[Coach, bool]:
    """``(coach, owned)`` for a coach or a coach name; ``owned`` is True when it was built here (close it after).

    A :class:`Coach` instance is used as it is (no keyword argument may be given: configure the instance). A name
    ``"<backend>[:<model>]"`` builds that backend with ``kwargs``; keyword arguments set to ``None`` are dropped,
    so callers can pass optional settings through without overriding a backend's defaults.
    """
    given = {k: v for k, v in kwargs.items() if v is not None}
    if not isinstance(coach, str):
        if not isinstance(coach, Coach):
            raise TypeError(
                "coach must be a Coach (a judge method, an ajudge method and a name; see "
                f"mappa_envs.coach.SimpleCoach) or one of {_names()}; got {type(coach).__name__}"
            )
        if given:
            raise ValueError(
                f"{', '.join(sorted(given))} configure a coach built from a name; the coach instance "
                f"{coach.name!r} is already built, so configure it directly"
            )
        return coach, False
    backend, _, model = coach.partition(":")
    if backend not in _BACKENDS:
        raise ValueError(f"unknown coach {coach!r}: use one of {_names()} or a Coach instance")
    factory, needs_model = _BACKENDS[backend]
    if needs_model and not model.strip():
        raise ValueError(f"coach {coach!r} names no model: write '{backend}:MODEL'")
    return factory(model.strip(), **given), True


def _names() -> str:
    shown = [f"'{n}:MODEL'" if _BACKENDS[n][1] else f"'{n}'" for n in coach_backends()]
    return ", ".join(shown)


def _rules(model: str, *, hindsight: bool = True, **kwargs: Any) -> Coach:
    from mappa_envs.coach.rules import RuleCoach

    if model:
        raise ValueError(f"the rule coach takes no model name, got 'rules:{model}'")
    extra = sorted(k for k in ("base_url", "api_key") if k in kwargs)
    if extra:
        raise ValueError(
            f"the rule coach runs offline: {', '.join(extra)} apply to 'openai:MODEL' coaches only"
        )
    kwargs.pop(
        "fallback", None
    )  # the rule coach cannot fail; a wrapper's fallback setting does not concern it
    return RuleCoach(hindsight=hindsight, **kwargs)


def _openai(model: str, *, hindsight: bool = True, **kwargs: Any) -> Coach:
    """An LLM coach shows the outcome whenever a record carries one (in hindsight judging, every record), so the
    wrapper's ``when`` decides; ``hindsight`` is accepted for a uniform call and not passed on."""
    from mappa_envs.coach.openai_coach import OpenAICoach

    return OpenAICoach(model, **kwargs)


def _calibrated(model: str, **kwargs: Any) -> Coach:
    from mappa_envs.coach.calibrated import calibrated

    return calibrated(model, **kwargs)


register_coach("rules", _rules)
register_coach("openai", _openai, needs_model=True)
register_coach("calibrated", _calibrated)
