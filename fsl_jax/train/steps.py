"""Train and eval steps: pure functions, jitted once with their shardings.

A loss function has the signature
    loss_fn(params, teacher_params, batch, rng, step) -> (loss, metrics)
and must average over real examples (batch["example_mask"]). The train step
differentiates it with respect to params only.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from fsl_jax.train.mesh import data_sharded, replicated
from fsl_jax.train.state import TrainState
from fsl_jax.train.threefry import use_unrolled_threefry_on_cpu

LossFn = Callable[[Any, Any, dict, jax.Array, jax.Array], tuple[jax.Array, dict]]


def _state_shardings(state: TrainState) -> TrainState:
    return jax.tree.map(lambda leaf: leaf.sharding, state)


def global_norm(tree: Any) -> jax.Array:
    """Return the L2 norm of all leaves of tree together.

    optax 0.2.8 deprecates optax.global_norm for optax.tree.norm; computing it
    here keeps the step independent of which name an optax version has.
    """
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves))


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    mesh: Mesh,
    norm_metrics: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Return the jitted `train_step(state, batch) -> (state, metrics)`.

    The state is donated, so the caller must use the returned state. Randomness is
    fold_in(state.rng, state.step): a resumed run draws the same keys. Metrics are
    replicated scalars: the loss terms and the gradient norm, plus the norms of the
    updates and the new params with norm_metrics. Each of those two is one more pass
    over every parameter. On the pair stage's SST-2 step on 2 CPU cores they took
    about 6% of the step time and 0.4 to 0.8 s of its 7 s compilation
    (docs/benchmarks.md).
    """
    # Dropout masks come from Threefry; its loop-free CPU lowering gives the same bits faster.
    use_unrolled_threefry_on_cpu()

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        teacher_params = jax.lax.stop_gradient(state.teacher_params)

        def objective(params):
            return loss_fn(params, teacher_params, batch, rng, state.step)

        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        metrics["loss"] = loss
        metrics["grad_norm"] = global_norm(grads)
        if norm_metrics:
            metrics["update_norm"] = global_norm(updates)
            metrics["param_norm"] = global_norm(params)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    state_sharding = _state_shardings(state)
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, data_sharded(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(
    apply_fn: Callable[[Any, dict], dict],
    params: Any,
    mesh: Mesh,
    output_keys: tuple[str, ...] = ("logits",),
) -> Callable[[Any, dict], dict]:
    """Return the jitted `eval_step(params, batch) -> {key: float32 array}` for output_keys.

    apply_fn(params, batch) runs the model in eval mode and returns its outputs dict.
    Outputs are replicated so every process can read all rows of the batch.
    """

    def eval_step(params, batch):
        outputs = apply_fn(params, batch)
        return {key: outputs[key].astype(jnp.float32) for key in output_keys}

    # Host (numpy) params have no sharding yet: jit replicates them.
    param_sharding = jax.tree.map(lambda leaf: getattr(leaf, "sharding", replicated(mesh)), params)
    return jax.jit(
        eval_step,
        in_shardings=(param_sharding, data_sharded(mesh)),
        out_shardings=replicated(mesh),
    )


def masked_cross_entropy(logits: jax.Array, batch: dict) -> jax.Array:
    """Cross-entropy averaged over real examples, against soft_labels when present."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if "soft_labels" in batch:
        targets = batch["soft_labels"]
    else:
        targets = jax.nn.one_hot(batch["labels"], logits.shape[-1])
    per_example = -jnp.sum(targets * log_probs, axis=-1)
    mask = batch["example_mask"].astype(jnp.float32)
    return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_accuracy(logits: jax.Array, batch: dict) -> jax.Array:
    mask = batch["example_mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == batch["labels"]).astype(jnp.float32)
    return jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0)
