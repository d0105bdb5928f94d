"""Train and eval steps on real SST-2 batches: device-count invariance and compile counts."""

import jax
import numpy as np
import pytest
from train_jobs import host_copy, load_sst2, tiny_classifier

from configs import common
from fsl_jax.data import batch_iterator
from fsl_jax.train.checkpointing import Checkpointer
from fsl_jax.train.finetune import (
    TrainSettings,
    classification_loss,
    eval_apply,
    evaluate_split,
    packed_train_epochs,
)
from fsl_jax.train.loop import LoopSettings, train_loop
from fsl_jax.train.mesh import make_mesh
from fsl_jax.train.optimizer import make_optimizer
from fsl_jax.train.state import create_train_state
from fsl_jax.train.steps import make_eval_step, make_train_step
from fsl_jax.train.writers import MetricWriter

SEED = 13
BATCH_SIZE = 8
BUCKETS = (16, 32, 64)


@pytest.fixture(scope="module")
def sst2(data_dir, minilm_dir):
    return load_sst2(data_dir, minilm_dir, max_length=64, seed=SEED)


@pytest.fixture(scope="module")
def tiny():
    return tiny_classifier(num_layers=2, dropout=0.1)


def _optimizer(params, total_steps):
    config = common.get_base_config().optimizer
    config.learning_rate = 1e-3
    return make_optimizer(config, params, total_steps, num_layers=2)[0]


def _epoch_batches(encoded, epoch, buckets):
    return batch_iterator(
        encoded,
        BATCH_SIZE,
        buckets,
        shuffle=True,
        seed=SEED,
        epoch=epoch,
        num_devices=8,
    )


def _steps_on_mesh(model, params, encoded, num_devices, num_steps, norm_metrics=True):
    """Train num_steps on a mesh of num_devices; return (per-step metrics, host params)."""
    mesh = make_mesh(num_devices)
    optimizer = _optimizer(params, num_steps)
    state = create_train_state(params, optimizer, seed=SEED, mesh=mesh)
    train_step = make_train_step(
        classification_loss(model), optimizer, state, mesh, norm_metrics=norm_metrics
    )
    history = []
    epoch = 0
    while len(history) < num_steps:
        for batch in _epoch_batches(encoded, epoch, (32,)):
            if len(history) == num_steps:
                break
            state, metrics = train_step(state, batch)
            history.append(jax.device_get(metrics))
        epoch += 1
    return history, host_copy(state.params)


def test_norm_metrics_change_no_params(tiny, sst2):
    model, params = tiny
    with_norms, params_with = _steps_on_mesh(model, params, sst2["train"], 2, 3)
    without_norms, params_without = _steps_on_mesh(
        model, params, sst2["train"], 2, 3, norm_metrics=False
    )
    assert {"grad_norm", "update_norm", "param_norm"} <= set(with_norms[-1])
    assert "grad_norm" in without_norms[-1]
    assert not {"update_norm", "param_norm"} & set(without_norms[-1])
    for step, (first, second) in enumerate(zip(with_norms, without_norms)):
        assert first["loss"] == second["loss"], step
        assert first["grad_norm"] == second["grad_norm"], step
    for with_leaf, without_leaf in zip(
        jax.tree.leaves(params_with), jax.tree.leaves(params_without)
    ):
        np.testing.assert_array_equal(with_leaf, without_leaf)


@pytest.mark.slow
def test_eight_devices_match_one_device(tiny, sst2):
    """The same global batches on 8 devices and on 1 give the same run, dropout included."""
    model, params = tiny
    num_steps = 20
    one_history, one_params = _steps_on_mesh(model, params, sst2["train"], 1, num_steps)
    eight_history, eight_params = _steps_on_mesh(model, params, sst2["train"], 8, num_steps)

    assert one_history[-1]["loss"] != one_history[0]["loss"]
    for step, (one, eight) in enumerate(zip(one_history, eight_history)):
        for key in ("loss", "accuracy", "grad_norm", "update_norm", "param_norm"):
            np.testing.assert_allclose(
                eight[key], one[key], rtol=1e-5, atol=1e-6, err_msg=f"{key} at step {step}"
            )
    flat_one = jax.tree_util.tree_leaves_with_path(one_params)
    flat_eight = jax.tree.leaves(eight_params)
    for (path, one), eight in zip(flat_one, flat_eight):
        np.testing.assert_allclose(
            eight, one, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path)
        )


@pytest.mark.slow
def test_train_step_compiles_once_per_bucket(tiny, sst2, tmp_path):
    """An epoch compiles the step once per length bucket; a resumed run compiles nothing new."""
    model, params = tiny
    train = sst2["train"]
    mesh = make_mesh(2)
    steps_per_epoch = -(-len(train) // BATCH_SIZE)
    optimizer = _optimizer(params, 2 * steps_per_epoch)
    state = create_train_state(params, optimizer, seed=SEED, mesh=mesh)
    train_step = make_train_step(classification_loss(model), optimizer, state, mesh)

    def make_epoch(epoch):
        return _epoch_batches(train, epoch, BUCKETS)

    def bucket_set(epochs):
        return {batch["input_ids"].shape[1] for epoch in epochs for batch in make_epoch(epoch)}

    def run(template, num_steps):
        checkpointer = Checkpointer(tmp_path / "checkpoints")
        writer = MetricWriter(tmp_path, "tiny", SEED)
        try:
            return train_loop(
                state=template,
                train_step=train_step,
                make_epoch=make_epoch,
                evaluate=lambda _: {"accuracy": 0.0},
                settings=LoopSettings(
                    num_steps=num_steps,
                    steps_per_epoch=steps_per_epoch,
                    checkpoint_every=steps_per_epoch,
                ),
                mesh=mesh,
                checkpointer=checkpointer,
                writer=writer,
            )
        finally:
            writer.close()
            checkpointer.close()

    first_epoch = bucket_set([0])
    assert len(first_epoch) >= 2, "the test needs an epoch that uses several buckets"
    run(state, steps_per_epoch)
    assert train_step._cache_size() == len(first_epoch)

    # A fresh template restored from the checkpoint must hit the same compiled steps.
    template = create_train_state(params, optimizer, seed=SEED, mesh=mesh)
    resumed, _ = run(template, 2 * steps_per_epoch)
    assert int(resumed.step) == 2 * steps_per_epoch
    assert train_step._cache_size() == len(bucket_set([0, 1]))


def test_eval_step_compiles_once_per_bucket(tiny, sst2):
    model, params = tiny
    dev = sst2["dev"]
    mesh = make_mesh(2)
    settings = TrainSettings.from_config(
        common.get_base_config().train.copy_and_resolve_references(), len(dev), mesh
    )
    settings.eval_batch_size = 8
    settings.length_buckets = BUCKETS
    settings.pack_eval = False
    eval_step = make_eval_step(eval_apply(model), params, mesh)
    first, logits = evaluate_split(eval_step, params, dev, settings, mesh, num_labels=2)
    compiled = eval_step._cache_size()
    second, _ = evaluate_split(eval_step, params, dev, settings, mesh, num_labels=2)

    lengths = np.sort(dev.lengths)
    expected = {
        min(bucket for bucket in BUCKETS if bucket >= max(chunk.max(), 1))
        for chunk in np.array_split(lengths, range(8, len(lengths), 8))
    }
    assert len(expected) >= 2, "the test needs dev rows in several buckets"
    assert compiled == len(expected)
    assert eval_step._cache_size() == compiled
    assert first == second
    assert logits.shape == (len(dev), 2)

    # Packed rows of the largest bucket: one shape, so one more compilation in all.
    settings.pack_eval = True
    packed, packed_logits = evaluate_split(eval_step, params, dev, settings, mesh, num_labels=2)
    evaluate_split(eval_step, params, dev, settings, mesh, num_labels=2)
    assert eval_step._cache_size() == compiled + 1
    np.testing.assert_allclose(packed_logits, logits, atol=1e-4)
    assert packed["accuracy"] == first["accuracy"]


def test_train_batch_checked_only_when_training():
    train = common.get_base_config().train.copy_and_resolve_references()
    train.batch_size = 12
    train.enabled = True
    with pytest.raises(ValueError, match="train.batch_size 12 cannot be split over 8 devices"):
        TrainSettings.from_config(train, 32, make_mesh(8))
    train.enabled = False
    settings = TrainSettings.from_config(train, 32, make_mesh(8))
    assert settings.eval_batch_size % 8 == 0


def test_global_norm_matches_numpy():
    from fsl_jax.train.steps import global_norm

    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float32(-2.0)]}
    expected = np.sqrt(np.sum(np.arange(6) ** 2) + 4.0)
    np.testing.assert_allclose(float(global_norm(tree)), expected, rtol=1e-6)


def test_packed_train_batches_match_padded(sst2):
    """train.pack: each step has the examples and, without dropout, the loss of the padded one."""
    model, params = tiny_classifier(num_layers=1, dropout=0.0)
    train = sst2["train"]
    config = common.get_base_config().train
    config.update(enabled=True, batch_size=BATCH_SIZE, num_epochs=2, length_buckets=BUCKETS)
    mesh = make_mesh(2)
    settings = TrainSettings.from_config(config, len(train), mesh)
    make_epoch, (rows, width, slots) = packed_train_epochs(train, settings, SEED, mesh.size)
    assert width == max(BUCKETS)
    assert rows % mesh.size == 0
    assert rows < BATCH_SIZE
    loss_fn = jax.jit(classification_loss(model))
    rng = jax.random.PRNGKey(0)
    for epoch in range(2):
        padded_batches = list(_epoch_batches(train, epoch, BUCKETS))
        packed_batches = list(make_epoch(epoch))
        assert len(packed_batches) == len(padded_batches) == settings.steps_per_epoch
        for step, (padded, packed) in enumerate(zip(padded_batches, packed_batches)):
            assert packed["input_ids"].shape == (rows, width)
            assert packed["example_mask"].shape == (rows, slots)
            real = packed["example_mask"] > 0
            padded_real = padded["example_mask"] > 0
            assert sorted(packed["example_index"][real]) == sorted(
                padded["example_index"][padded_real]
            ), (epoch, step)
            packed_loss, packed_metrics = loss_fn(params, None, packed, rng, 0)
            padded_loss, padded_metrics = loss_fn(params, None, padded, rng, 0)
            np.testing.assert_allclose(packed_loss, padded_loss, rtol=1e-5, err_msg=str(step))
            assert packed_metrics["accuracy"] == padded_metrics["accuracy"], step
