"""The distillation objective: a weighted sum of loss terms, built once from the config.

Config schema (an ml_collections ConfigDict or a plain mapping)::

  distill.temperature = 4.0            # or a schedule, see fsl_jax.losses.schedules
  distill.terms = {
      "kd": {"weight": 0.5},
      "ce": {"weight": 0.5},
      "hidden_mse": {"weight": {"schedule": "linear_warmup", "value": 1.0, "steps": 500},
                     "layer_map": "last_k", "last_k": 4},
      # A second entry that runs the "hidden_mse" function under its own name:
      "hidden_mse_early": {"term": "hidden_mse", "weight": 0.1,
                           "layer_map": [(1, 3), (2, 6)]},
  }

Every other key of an entry is an option of that term (see docs/losses.md).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from fsl_jax.losses.registry import LOSS_TERMS, TermSpec
from fsl_jax.losses.schedules import Schedule, parse_schedule


@dataclasses.dataclass(frozen=True)
class ActiveTerm:
    """One config entry of the objective: a registered term, its weight and options."""

    name: str
    spec: TermSpec
    weight: Schedule
    options: Mapping[str, Any]


class DistillationObjective:
    """Weighted sum of loss terms with scheduled weights and temperature.

    Call it as `objective(params, student_outputs, teacher_outputs, batch, step)`.
    The call is pure and traces under `jax.jit`, so the train step can jit it
    together with the teacher forward pass. `params` is the pytree from `init`,
    trained together with the student. Teacher outputs pass through
    `jax.lax.stop_gradient`, so no gradient reaches the teacher.
    """

    def __init__(self, terms: tuple[ActiveTerm, ...], temperature: Schedule):
        if not terms:
            raise ValueError("A distillation objective needs at least one term with a weight.")
        self.terms = terms
        self.temperature = temperature

    @property
    def term_names(self) -> tuple[str, ...]:
        return tuple(term.name for term in self.terms)

    @property
    def required_outputs(self) -> frozenset[str]:
        """Optional model outputs ('hidden_states', 'attentions') the active terms read."""
        return frozenset().union(*(term.spec.requires for term in self.terms))

    @property
    def requires_teacher(self) -> bool:
        """Whether any active term reads the teacher outputs."""
        return any(term.spec.uses_teacher for term in self.terms)

    def init(self, rng: jax.Array, student_outputs: Mapping, teacher_outputs: Mapping) -> dict:
        """Create the learned parameters of the active terms, keyed by term name.

        Only shapes are read, so the outputs may be `jax.eval_shape` results. A term
        without parameters, or one whose widths match under projection='auto', has
        no entry. Each term's key is folded from its name, so adding a term leaves
        the initial parameters of the others unchanged.
        """
        params = {}
        for term in self.terms:
            if term.spec.init_params is None:
                continue
            term_rng = jax.random.fold_in(rng, zlib.crc32(term.name.encode()) & 0x7FFFFFFF)
            term_params = term.spec.init_params(
                term_rng, student_outputs, teacher_outputs, **term.options
            )
            if term_params:
                params[term.name] = term_params
        return params

    def __call__(
        self,
        params: Mapping[str, Any] | None,
        student_outputs: Mapping,
        teacher_outputs: Mapping | None,
        batch: Mapping[str, jax.Array],
        step: jax.Array | int,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Return the weighted loss and the metrics of this step.

        The metrics hold each term's unweighted value under its name, its current
        weight under `<name>_weight`, and the current `temperature`.
        """
        if teacher_outputs is None and self.requires_teacher:
            users = [term.name for term in self.terms if term.spec.uses_teacher]
            raise ValueError(f"Teacher outputs are None, but the terms {users} read them.")
        if teacher_outputs is not None:
            teacher_outputs = jax.tree.map(jax.lax.stop_gradient, teacher_outputs)
        params = params or {}
        temperature = self.temperature(step)

        loss = jnp.zeros((), jnp.float32)
        metrics = {}
        for term in self.terms:
            arguments = dict(term.options)
            if term.spec.uses_temperature:
                arguments["temperature"] = temperature
            if term.spec.init_params is not None:
                arguments["params"] = params.get(term.name)
            value = term.spec.fn(student_outputs, teacher_outputs, batch, **arguments)
            weight = term.weight(step)
            loss = loss + weight * value
            metrics[term.name] = value
            metrics[f"{term.name}_weight"] = weight
        metrics["temperature"] = temperature
        return loss, metrics

    def __repr__(self) -> str:
        return (
            f"DistillationObjective(terms={list(self.term_names)}, temperature={self.temperature})"
        )


def _to_plain(value: Any) -> Any:
    """Convert a ConfigDict, or any mapping, into nested plain dicts."""
    if hasattr(value, "items"):
        return {key: _to_plain(item) for key, item in value.items()}
    return value


def _build_term(name: str, entry: Any, path: str) -> ActiveTerm | None:
    """Validate one entry of `terms`, returning None when its weight is a constant 0."""
    entry_path = f"{path}.terms.{name}"
    if not isinstance(entry, Mapping):
        raise TypeError(
            f"{entry_path} must be a mapping with a 'weight' and the term's options, got {entry!r}."
        )
    options = dict(entry)
    term_name = options.pop("term", name)
    if term_name not in LOSS_TERMS:
        raise ValueError(
            f"{entry_path}: unknown loss term {term_name!r}. Known terms: {sorted(LOSS_TERMS)}."
        )
    spec = LOSS_TERMS[term_name]
    if "weight" not in options:
        raise ValueError(f"{entry_path} is missing 'weight'.")

    weight = parse_schedule(options.pop("weight"), f"{entry_path}.weight")
    if min(weight.start, weight.end) < 0:
        raise ValueError(
            f"{entry_path}.weight must not be negative, but it goes from {weight.start} "
            f"to {weight.end}."
        )
    unknown = sorted(set(options) - set(spec.option_defaults))
    if unknown:
        note = " The temperature is set by distill.temperature." if "temperature" in unknown else ""
        raise ValueError(
            f"{entry_path}: unknown options {unknown} for loss term {term_name!r}. "
            f"Valid options: {sorted(spec.option_defaults)}.{note}"
        )
    if weight.constant_value == 0:
        return None
    return ActiveTerm(name, spec, weight, {**spec.option_defaults, **options})


def build_objective(config: Any, path: str = "distill") -> DistillationObjective:
    """Build the distillation objective from a config with `terms` and `temperature`.

    A term whose weight is the constant 0 is left out, so it is never computed and
    its outputs are not required. A scheduled weight that passes through 0 is
    still computed at every step. `temperature` defaults to 1.0. Other keys of the
    config are ignored, so it can also hold settings of the train loop.

    Args:
      config: a ConfigDict or mapping, laid out as in the module docstring.
      path: the config's location, used to name values in error messages.

    Raises:
      ValueError: an unknown term or option, a missing weight, a negative weight,
        an invalid schedule, a temperature that is not positive at every step, or
        no term with a nonzero weight.
      TypeError: a term entry is not a mapping, or a schedule value is not a number.
    """
    config = _to_plain(config)
    terms_config = config.get("terms")
    if not isinstance(terms_config, Mapping) or not terms_config:
        raise ValueError(
            f"{path}.terms must map term names to {{'weight': ..., options}}, got "
            f"{terms_config!r}. Known terms: {sorted(LOSS_TERMS)}."
        )

    temperature = parse_schedule(config.get("temperature", 1.0), f"{path}.temperature")
    if min(temperature.start, temperature.end) <= 0:
        raise ValueError(
            f"{path}.temperature must be positive at every step, but it goes from "
            f"{temperature.start} to {temperature.end}."
        )

    terms = []
    for name, entry in terms_config.items():
        term = _build_term(name, entry, path)
        if term is None:
            logging.info("Loss term %r has weight 0 and is not computed.", name)
        else:
            terms.append(term)
    if not terms:
        raise ValueError(f"Every term in {path}.terms has weight 0, so the loss would be 0.")

    objective = DistillationObjective(tuple(terms), temperature)
    logging.info(
        "Built %r; required model outputs: %s.", objective, sorted(objective.required_outputs)
    )
    return objective
