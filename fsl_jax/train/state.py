"""Train state pytree and its creation directly on the mesh."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from fsl_jax.train.mesh import replicated


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes.

    Attributes:
      step: optimizer steps taken (micro-steps when gradients are accumulated).
      params: trained parameters (the model, plus distillation projections).
      opt_state: optimizer state of params only.
      rng: base key (raw uint32[2]); each step uses fold_in(rng, step).
      teacher_params: frozen teacher for distillation, or None. Never differentiated,
        never in opt_state and not saved with the periodic checkpoints.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    teacher_params: Any = None

    def checkpoint_items(self) -> dict[str, Any]:
        """Return the part of the state that periodic checkpoints save."""
        return {
            "step": self.step,
            "params": self.params,
            "opt_state": self.opt_state,
            "rng": self.rng,
        }


def create_train_state(
    params: Any,
    optimizer: optax.GradientTransformation,
    seed: int,
    mesh: Mesh,
    teacher_params: Any = None,
    param_sharding: Callable[[Any], Any] | None = None,
) -> TrainState:
    """Build the train state with params and optimizer state placed on the mesh.

    Params are replicated unless param_sharding maps the params tree to shardings
    (e.g. to shard a large teacher later). The optimizer state is created inside
    jit with the matching out_shardings, so it is never materialised elsewhere.
    """
    sharding = param_sharding(params) if param_sharding else replicated(mesh)
    # A copy inside jit gives params buffers of their own. On CPU, device_put may
    # alias host memory, and a student built from teacher arrays would then share
    # buffers with the teacher, which the donating train step cannot take.
    params = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=sharding)(params)
    opt_shapes = jax.eval_shape(optimizer.init, params)
    opt_sharding = jax.tree.map(lambda _: replicated(mesh), opt_shapes)
    opt_state = jax.jit(optimizer.init, out_shardings=opt_sharding)(params)
    if teacher_params is not None:
        teacher_params = jax.device_put(teacher_params, replicated(mesh))
    rng = jax.device_put(jax.random.PRNGKey(seed), replicated(mesh))
    step = jax.device_put(jnp.zeros((), jnp.int32), replicated(mesh))
    return TrainState(
        step=step, params=params, opt_state=opt_state, rng=rng, teacher_params=teacher_params
    )
