"""Learned linear maps from student width to teacher width for feature terms.

The parameters are trained with the student: the objective returns them from
`init` and takes them back on every call.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

PROJECTION_MODES = ("auto", "linear")


def needs_projection(student_width: int, teacher_width: int, mode: str) -> bool:
    """Decide whether a term maps student features through a learned linear layer.

    'auto' projects only when the widths differ, and 'linear' always projects.
    """
    if mode not in PROJECTION_MODES:
        raise ValueError(f"Unknown projection {mode!r}. Valid values: {list(PROJECTION_MODES)}.")
    return mode == "linear" or student_width != teacher_width


def init_projection(rng: jax.Array, student_width: int, teacher_width: int) -> dict[str, jax.Array]:
    """Create a float32 dense layer [student_width, teacher_width] plus bias.

    The kernel uses LeCun-normal initialisation, the default of `flax.linen.Dense`.
    """
    kernel = jax.nn.initializers.lecun_normal()(rng, (student_width, teacher_width), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((teacher_width,), jnp.float32)}


def apply_projection(features: jax.Array, params: Mapping[str, jax.Array] | None) -> jax.Array:
    """Map [..., student_width] features to teacher width, or return them when params is None."""
    if params is None:
        return features
    return features @ params["kernel"] + params["bias"]
