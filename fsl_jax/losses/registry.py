"""Registry of loss terms: each term is one function registered under a config name."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

# Model outputs that the models compute only on request (see docs/design.md).
OPTIONAL_OUTPUTS = ("hidden_states", "attentions")

# Keyword arguments that the objective supplies itself, so a config cannot set them.
RESERVED_ARGUMENTS = ("temperature", "params")


@dataclasses.dataclass(frozen=True)
class TermSpec:
    """A registered loss term and what the objective needs to call it.

    Attributes:
        name: the registered name, which is a config key under `distill.terms` or
          the `term` value of an entry.
        fn: `fn(student_outputs, teacher_outputs, batch, **options) -> scalar`.
        requires: optional model outputs the term reads, a subset of OPTIONAL_OUTPUTS.
        uses_teacher: False for terms that read only the student and the batch.
        init_params: `init_params(rng, student_outputs, teacher_outputs, **options)`
            returning the term's learned parameters (a pytree, possibly empty), or None
            for a term without parameters. The outputs may be arrays or
            `jax.ShapeDtypeStruct`s, since only shapes are read.
        option_defaults: the keyword-only arguments of `fn` that a config may set,
            with their defaults.
        uses_temperature: whether `fn` takes the scheduled `temperature`.
    """

    name: str
    fn: Callable[..., Any]
    requires: frozenset[str]
    uses_teacher: bool
    init_params: Callable[..., Any] | None
    option_defaults: Mapping[str, Any]
    uses_temperature: bool


LOSS_TERMS: dict[str, TermSpec] = {}


def _option_defaults(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """Read the config options of a term from its keyword-only arguments."""
    parameters = list(inspect.signature(fn).parameters.values())
    positional = [p for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    if len(positional) != 3:
        raise TypeError(
            f"Loss term {name!r} must take (student_outputs, teacher_outputs, batch) "
            f"positionally, but {fn.__qualname__} takes {[p.name for p in positional]}."
        )
    defaults = {}
    for parameter in parameters:
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if parameter.name in RESERVED_ARGUMENTS:
            continue
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"Option {parameter.name!r} of loss term {name!r} needs a default value, "
                "so that a config entry with only a weight is complete."
            )
        defaults[parameter.name] = parameter.default
    return defaults


def register_term(
    name: str,
    *,
    requires: tuple[str, ...] = (),
    uses_teacher: bool = True,
    init_params: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function in LOSS_TERMS under `name`.

    The function's keyword-only arguments with defaults become the term's config
    options. It may also take `temperature` (the scheduled value) and, when
    `init_params` is given, `params` (the pytree that `init_params` returned).

    Raises:
        ValueError: `name` is already registered, or `requires` names an output that
            is not in OPTIONAL_OUTPUTS.
        TypeError: the function's signature does not follow the term contract.
    """
    unknown = sorted(set(requires) - set(OPTIONAL_OUTPUTS))
    if unknown:
        raise ValueError(
            f"Loss term {name!r} requires unknown outputs {unknown}. "
            f"Valid values: {list(OPTIONAL_OUTPUTS)}."
        )

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in LOSS_TERMS:
            raise ValueError(
                f"Loss term {name!r} is already registered by "
                f"{LOSS_TERMS[name].fn.__module__}.{LOSS_TERMS[name].fn.__qualname__}."
            )
        arguments = inspect.signature(fn).parameters
        if init_params is not None and "params" not in arguments:
            raise TypeError(
                f"Loss term {name!r} has init_params, so {fn.__qualname__} must take a "
                "keyword-only `params` argument."
            )
        LOSS_TERMS[name] = TermSpec(
            name=name,
            fn=fn,
            requires=frozenset(requires),
            uses_teacher=uses_teacher,
            init_params=init_params,
            option_defaults=_option_defaults(name, fn),
            uses_temperature="temperature" in arguments,
        )
        return fn

    return decorate
