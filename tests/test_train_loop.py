"""The train loop on a tiny model and real SST-2 batches: non-finite losses and checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from train_jobs import host_copy, load_sst2, tiny_classifier

from configs import common
from fsl_jax.data import batch_iterator
from fsl_jax.train.checkpointing import Checkpointer
from fsl_jax.train.finetune import classification_loss
from fsl_jax.train.loop import LoopSettings, NonFiniteLossError, train_loop
from fsl_jax.train.mesh import make_mesh
from fsl_jax.train.optimizer import make_optimizer
from fsl_jax.train.state import create_train_state
from fsl_jax.train.steps import make_train_step
from fsl_jax.train.writers import MetricWriter

SEED = 13
BAD_STEP = 3
CHECKPOINT_EVERY = 2


@pytest.fixture(scope="module")
def job(data_dir, minilm_dir):
    model, params = tiny_classifier(num_layers=1)
    train = load_sst2(data_dir, minilm_dir, max_length=32, seed=SEED)["train"]
    return model, params, train


def _run_loop(job, workdir, loss_fn, stop_after=None):
    """Train 6 steps with an eval and a checkpoint every 2, and return the final state."""
    _, params, train = job
    mesh = make_mesh(2)
    optimizer, _ = make_optimizer(common.get_base_config().optimizer, params, 6, num_layers=1)
    state = create_train_state(params, optimizer, seed=SEED, mesh=mesh)
    train_step = make_train_step(loss_fn, optimizer, state, mesh)

    def make_epoch(epoch):
        return batch_iterator(train, 8, (32,), shuffle=True, seed=SEED, epoch=epoch, num_devices=2)

    settings = LoopSettings(
        num_steps=6,
        steps_per_epoch=4,
        eval_every=CHECKPOINT_EVERY,
        checkpoint_every=CHECKPOINT_EVERY,
        stop_after=stop_after,
    )
    evaluations = []

    def evaluate(_):
        # Each evaluation scores higher than the last, so the latest one is the best.
        evaluations.append(None)
        return {"accuracy": float(len(evaluations))}

    checkpointer = Checkpointer(workdir / "checkpoints")
    writer = MetricWriter(workdir, "tiny", SEED)
    try:
        state, _ = train_loop(
            state=state,
            train_step=train_step,
            make_epoch=make_epoch,
            evaluate=evaluate,
            settings=settings,
            mesh=mesh,
            checkpointer=checkpointer,
            writer=writer,
        )
    finally:
        writer.close()
        checkpointer.close()
    return state


@jax.custom_vjp
def _nan_gradient_if(value, poisoned):
    """Return value unchanged, but make its gradient NaN where poisoned > 0."""
    return value


def _nan_gradient_forward(value, poisoned):
    return value, poisoned


def _nan_gradient_backward(poisoned, cotangent):
    return jnp.where(poisoned > 0, jnp.nan, cotangent), jnp.zeros_like(poisoned)


_nan_gradient_if.defvjp(_nan_gradient_forward, _nan_gradient_backward)


def _poisoned_loss(kind, model):
    """Return the classification loss with a non-finite value from step BAD_STEP on.

    kind 'nan' or 'inf' replaces the loss. 'nan_gradient' keeps the loss finite and
    makes every gradient NaN, so only the gradient shows the failure.
    """
    loss_fn = classification_loss(model)

    def poisoned(params, teacher_params, batch, rng, step):
        loss, metrics = loss_fn(params, teacher_params, batch, rng, step)
        bad = step >= BAD_STEP
        if kind == "nan_gradient":
            return _nan_gradient_if(loss, bad.astype(jnp.float32)), metrics
        return jnp.where(bad, float(kind), loss), metrics

    return poisoned


@pytest.fixture(scope="module")
def reference_params(job, tmp_path_factory):
    """Params of a clean run stopped at the last checkpoint before BAD_STEP."""
    model, _, _ = job
    workdir = tmp_path_factory.mktemp("reference")
    state = _run_loop(job, workdir, classification_loss(model), stop_after=CHECKPOINT_EVERY)
    return host_copy(state.params)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("nan", "loss is nan"),
        ("inf", "loss is inf"),
        ("nan_gradient", "gradient norm is nan"),
    ],
)
def test_non_finite_loss_stops_and_keeps_checkpoint(job, reference_params, tmp_path, kind, message):
    model, params, _ = job
    with pytest.raises(NonFiniteLossError, match=f"{message} at step {BAD_STEP}"):
        _run_loop(job, tmp_path / "bad", _poisoned_loss(kind, model))

    checkpointer = Checkpointer(tmp_path / "bad" / "checkpoints")
    assert checkpointer.latest_step() == CHECKPOINT_EVERY
    mesh = make_mesh(2)
    optimizer, _ = make_optimizer(common.get_base_config().optimizer, params, 6, num_layers=1)
    template = create_train_state(params, optimizer, seed=SEED, mesh=mesh)
    restored, record = checkpointer.restore_latest(template)
    assert int(restored.step) == CHECKPOINT_EVERY
    assert record["best_step"] == CHECKPOINT_EVERY
    restored_leaves = jax.tree_util.tree_leaves_with_path(host_copy(restored.params))
    for (path, value), expected in zip(restored_leaves, jax.tree.leaves(reference_params)):
        assert np.all(np.isfinite(value)), jax.tree_util.keystr(path)
        np.testing.assert_array_equal(value, expected, err_msg=jax.tree_util.keystr(path))
    best_params, best_record = checkpointer.restore_best(template.params)
    assert best_record["step"] == CHECKPOINT_EVERY
    for value in jax.tree.leaves(best_params):
        assert np.all(np.isfinite(np.asarray(value)))
    checkpointer.close()


def test_async_save_survives_donation(job, tmp_path):
    _, params, _ = job
    replicated = NamedSharding(make_mesh(2), PartitionSpec())
    on_device = jax.device_put(params, replicated)
    expected = host_copy(on_device)
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.save_best(4, on_device, {"step": 4, "accuracy": 0.5})
    # The next train step reuses the donated buffers while the write may still run.
    overwrite = jax.jit(
        lambda tree: jax.tree.map(lambda leaf: leaf * 0 - 1, tree), donate_argnums=0
    )
    jax.block_until_ready(overwrite(on_device))
    restored, record = checkpointer.restore_best(jax.device_put(expected, replicated))
    checkpointer.close()
    assert record == {"step": 4, "accuracy": 0.5}
    for (path, value), want in zip(
        jax.tree_util.tree_leaves_with_path(host_copy(restored)), jax.tree.leaves(expected)
    ):
        np.testing.assert_array_equal(value, want, err_msg=jax.tree_util.keystr(path))


def test_best_params_skips_final_restore(job, tmp_path):
    _, params, _ = job
    replicated = NamedSharding(make_mesh(2), PartitionSpec())
    final = jax.device_put(jax.tree.map(lambda leaf: np.asarray(leaf) + 1.0, params), replicated)
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.save_best(2, params, {"step": 2, "accuracy": 0.75})
    record = {"best_step": 2, "best_dev": {"accuracy": 0.75}, "history": []}
    restored, best = checkpointer.best_params(final, 6, record)
    assert best == {"step": 2, "accuracy": 0.75}
    for value, want in zip(jax.tree.leaves(host_copy(restored)), jax.tree.leaves(params)):
        np.testing.assert_array_equal(value, want)
    # The best step is the final one, so the final params are returned without a read.
    record = {"best_step": 6, "best_dev": {"accuracy": 0.8}, "history": []}
    returned, best = checkpointer.best_params(final, 6, record)
    checkpointer.close()
    assert returned is final
    assert best == {"step": 6, "accuracy": 0.8}
