"""Step schedules for loss-term weights and the distillation temperature.

A schedule in the config is either a number (a constant) or a mapping:

  {"schedule": "constant", "value": v}
  {"schedule": "linear_warmup", "value": v, "steps": n}           0 -> v over n steps
  {"schedule": "linear_decay", "value": v, "end": e, "steps": n}  v -> e over n steps

After `steps` steps the value stays at its final value. Schedules are evaluated
with jnp ops on the step, so they work on a traced step inside `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

SCHEDULE_KINDS = ("constant", "linear_warmup", "linear_decay")

_KEYS = {
    "constant": {"schedule", "value"},
    "linear_warmup": {"schedule", "value", "steps"},
    "linear_decay": {"schedule", "value", "end", "steps"},
}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A value that moves linearly from `start` to `end` over `steps` train steps.

    A constant has start == end and steps == 0.
    """

    kind: str
    start: float
    end: float
    steps: int

    @property
    def constant_value(self) -> float | None:
        """The value at every step, or None when the value changes with the step."""
        return self.start if self.start == self.end else None

    def __call__(self, step: jax.Array | int) -> jax.Array:
        """Return the value at `step` as a float32 scalar."""
        if self.constant_value is not None:
            return jnp.asarray(self.start, jnp.float32)
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / self.steps, 0.0, 1.0)
        return jnp.asarray(self.start + (self.end - self.start) * progress, jnp.float32)


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{path} must be a number, got {value!r}.")
    return float(value)


def parse_schedule(spec: Any, path: str) -> Schedule:
    """Build a Schedule from a number or a schedule mapping.

    Args:
      spec: a number or a mapping as in the module docstring.
      path: where the spec sits in the config, such as "distill.terms.kd.weight";
        error messages start with it.

    Raises:
      ValueError: an unknown schedule kind, a missing or unknown key, or a step
        count below 1.
      TypeError: a value that is not a number.
    """
    if not isinstance(spec, Mapping):
        value = _number(spec, path)
        schedule = Schedule("constant", value, value, 0)
    else:
        kind = spec.get("schedule")
        if kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"{path}.schedule is {kind!r}. Valid schedules: {list(SCHEDULE_KINDS)}."
            )
        missing = sorted(_KEYS[kind] - set(spec))
        unknown = sorted(set(spec) - _KEYS[kind])
        if missing or unknown:
            raise ValueError(
                f"{path}: schedule {kind!r} takes the keys {sorted(_KEYS[kind])}; "
                f"missing {missing}, unknown {unknown}."
            )
        value = _number(spec["value"], f"{path}.value")
        if kind == "constant":
            schedule = Schedule(kind, value, value, 0)
        else:
            steps = spec["steps"]
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
                raise ValueError(f"{path}.steps must be a positive integer, got {steps!r}.")
            if kind == "linear_warmup":
                schedule = Schedule(kind, 0.0, value, int(steps))
            else:
                schedule = Schedule(kind, value, _number(spec["end"], f"{path}.end"), int(steps))
    return schedule
