"""The fine-tuning optimizer: decay mask, freezing, layer decay, schedules, accumulation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_jobs import host_copy, tiny_classifier

from configs import common
from fsl_jax.train.finetune import classification_loss
from fsl_jax.train.mesh import make_mesh
from fsl_jax.train.optimizer import (
    decay_mask,
    freeze_labels,
    learning_rate_schedule,
    make_optimizer,
)
from fsl_jax.train.state import create_train_state
from fsl_jax.train.steps import make_train_step

NUM_LAYERS = 3


def _optimizer_config(**overrides):
    config = common.get_base_config().optimizer
    config.update(overrides)
    return config


def _flat(tree):
    return {
        "/".join(str(getattr(entry, "key", entry)) for entry in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


@pytest.fixture(scope="module")
def tiny():
    """A 3-layer tiny classifier without dropout, so every step is deterministic."""
    return tiny_classifier(num_layers=NUM_LAYERS, dropout=0.0)


def _random_batch(seed, batch_size=8, length=16, vocab_size=1000):
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1, vocab_size, (batch_size, length)).astype(np.int32),
        "attention_mask": np.ones((batch_size, length), np.int32),
        "token_type_ids": np.zeros((batch_size, length), np.int32),
        "labels": rng.integers(0, 2, batch_size).astype(np.int32),
        "example_mask": np.ones(batch_size, np.float32),
        "example_index": np.arange(batch_size, dtype=np.int32),
    }


def _train(model, params, optimizer_config, batches, total_steps=None):
    """Run the real jitted train step over batches on one device.

    Returns the host params after each step.
    """
    mesh = make_mesh(1)
    optimizer, _ = make_optimizer(optimizer_config, params, total_steps or len(batches), NUM_LAYERS)
    state = create_train_state(params, optimizer, seed=0, mesh=mesh)
    train_step = make_train_step(classification_loss(model), optimizer, state, mesh)
    snapshots = []
    for batch in batches:
        state, _ = train_step(state, batch)
        snapshots.append(host_copy(state.params))
    return snapshots


# ----------------------------------------------------------------------------
# Weight decay mask.
# ----------------------------------------------------------------------------


def test_decay_mask_skips_biases_and_layernorm(tiny):
    _, params = tiny
    mask = _flat(decay_mask(params))
    for name, decays in mask.items():
        leaf_name = name.rsplit("/", 1)[-1]
        if leaf_name in ("bias", "scale"):
            assert not decays, name
        else:
            assert decays, name
    assert any("LayerNorm/scale" in name for name in mask)
    assert mask["encoder/embeddings/word_embeddings/embedding"]


def test_weight_decay_moves_only_decayed_params(tiny):
    """With zero gradients, AdamW changes only the kernels and embeddings, by lr * wd * value."""
    _, params = tiny
    config = _optimizer_config(
        learning_rate=0.1, weight_decay=0.5, schedule="constant", warmup_ratio=0.0, clip_norm=0.0
    )
    optimizer, _ = make_optimizer(config, params, 10, NUM_LAYERS)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(optimizer.update)(zero_grads, optimizer.init(params), params)
    for name, update in _flat(updates).items():
        value = _flat(params)[name]
        if name.endswith(("bias", "scale")):
            np.testing.assert_array_equal(update, 0.0, err_msg=name)
        else:
            np.testing.assert_allclose(update, -0.1 * 0.5 * value, rtol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------
# Freeze presets.
# ----------------------------------------------------------------------------

FROZEN_PREFIXES = {
    "none": (),
    "linear_probe": ("encoder/",),
    "embeddings": ("encoder/embeddings/",),
    "lower_2": ("encoder/embeddings/", "encoder/layer_0/", "encoder/layer_1/"),
}


@pytest.mark.parametrize("preset", sorted(FROZEN_PREFIXES))
def test_freeze_labels_match_preset(tiny, preset):
    _, params = tiny
    labels = _flat(freeze_labels(params, preset, NUM_LAYERS))
    frozen = FROZEN_PREFIXES[preset]
    for name, label in labels.items():
        expected = "frozen" if frozen and name.startswith(frozen) else "train"
        assert label == expected, f"{preset}: {name}"


@pytest.mark.parametrize("preset", ["linear_probe", "lower_2"])
def test_freeze_preset_keeps_frozen_params_bitwise(tiny, preset):
    """Three real train steps with weight decay leave frozen params exactly as they were."""
    model, params = tiny
    config = _optimizer_config(learning_rate=1e-3, freeze=preset, warmup_ratio=0.0)
    before = _flat(host_copy(params))
    after = _flat(_train(model, params, config, [_random_batch(seed) for seed in range(3)])[-1])
    frozen = FROZEN_PREFIXES[preset]
    for name, value in after.items():
        if name.startswith(frozen):
            np.testing.assert_array_equal(value, before[name], err_msg=f"{preset}: {name}")
        else:
            assert not np.array_equal(value, before[name]), f"{preset}: {name} did not train"


def test_freeze_labels_reject_unknown_and_too_deep(tiny):
    _, params = tiny
    with pytest.raises(ValueError, match="Unknown freeze preset 'lower'"):
        freeze_labels(params, "lower", NUM_LAYERS)
    with pytest.raises(ValueError, match="more layers than the encoder has"):
        freeze_labels(params, f"lower_{NUM_LAYERS + 1}", NUM_LAYERS)


# ----------------------------------------------------------------------------
# Layer-wise learning-rate decay and head scale.
# ----------------------------------------------------------------------------


def _expected_factor(name, layer_decay, head_lr_scale):
    if not name.startswith("encoder/"):
        return head_lr_scale
    if name.startswith("encoder/embeddings/"):
        depth = 0
    else:
        depth = int(name.split("/")[1].removeprefix("layer_")) + 1
    return layer_decay ** (NUM_LAYERS + 1 - depth)


def _first_updates(params, **overrides):
    config = _optimizer_config(warmup_ratio=0.0, schedule="constant", clip_norm=0.0, **overrides)
    optimizer, _ = make_optimizer(config, params, 10, NUM_LAYERS)
    grads = jax.tree.map(lambda leaf: jnp.full_like(leaf, 0.01), params)
    updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
    return _flat(updates)


@pytest.mark.parametrize("freeze", ["none", "lower_1"])
def test_layer_decay_scales_updates_by_depth(tiny, freeze):
    _, params = tiny
    plain = _first_updates(params, freeze=freeze)
    scaled = _first_updates(params, freeze=freeze, layer_decay=0.5, head_lr_scale=3.0)
    for name, update in scaled.items():
        factor = _expected_factor(name, 0.5, 3.0)
        np.testing.assert_allclose(update, factor * plain[name], rtol=1e-6, err_msg=name)
    assert _expected_factor("encoder/embeddings/x", 0.5, 3.0) == 0.5**4
    assert _expected_factor("encoder/layer_2/x", 0.5, 3.0) == 0.5
    if freeze == "lower_1":
        np.testing.assert_array_equal(scaled["encoder/layer_0/output/kernel"], 0.0)
        assert np.any(scaled["encoder/layer_1/output/kernel"] != 0.0)


# ----------------------------------------------------------------------------
# Learning-rate schedules.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_warms_up_then_decays(kind):
    peak, end_factor, total, warmup = 2e-4, 0.1, 50, 10
    config = _optimizer_config(
        learning_rate=peak, schedule=kind, warmup_ratio=0.2, end_factor=end_factor
    )
    schedule = learning_rate_schedule(config, total)
    for step in range(warmup + 1):
        np.testing.assert_allclose(schedule(step), peak * step / warmup, rtol=1e-6)
    for step in range(warmup, total + 1):
        progress = (step - warmup) / (total - warmup)
        if kind == "linear":
            expected = peak + (peak * end_factor - peak) * progress
        else:
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            expected = peak * ((1 - end_factor) * cosine + end_factor)
        np.testing.assert_allclose(schedule(step), expected, rtol=1e-5, err_msg=f"step {step}")
    np.testing.assert_allclose(schedule(total), peak * end_factor, rtol=1e-5)


def test_schedule_warmup_steps_beat_ratio():
    config = _optimizer_config(learning_rate=1.0, warmup_steps=4, warmup_ratio=0.5)
    schedule = learning_rate_schedule(config, 100)
    np.testing.assert_allclose(schedule(2), 0.5)
    np.testing.assert_allclose(schedule(4), 1.0)


def test_schedule_rejects_unknown_kind():
    with pytest.raises(ValueError, match="Unknown schedule 'step'"):
        learning_rate_schedule(_optimizer_config(schedule="step"), 10)


# ----------------------------------------------------------------------------
# Gradient accumulation.
# ----------------------------------------------------------------------------


def test_accumulation_matches_full_batch(tiny):
    """accumulate_steps=2 over two halves of a batch equals one step over the whole batch."""
    model, params = tiny
    full = _random_batch(seed=5, batch_size=8)
    halves = [{key: value[:4] for key, value in full.items()}]
    halves.append({key: value[4:] for key, value in full.items()})
    common_settings = {"learning_rate": 1e-3, "warmup_ratio": 0.0, "schedule": "constant"}

    (one_step,) = _train(model, params, _optimizer_config(**common_settings), [full])
    accumulated_config = _optimizer_config(accumulate_steps=2, **common_settings)
    after_first_half, accumulated = _train(model, params, accumulated_config, halves)

    before = _flat(params)
    for name, value in _flat(after_first_half).items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"moved early: {name}")
    expected = _flat(one_step)
    for name, value in _flat(accumulated).items():
        assert not np.array_equal(value, before[name]), f"{name} did not train"
        # Adam divides by the root of the second moment, so a float32 rounding
        # difference in a near-zero gradient shows up at about 1e-7 in the update.
        # Each weight moves by about the learning rate (1e-3); 1e-6 is 0.1% of that.
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("train_steps, updates", [(4, 2), (5, 3)])
def test_accumulated_schedule_spans_optimizer_updates(train_steps, updates):
    """With constant unit gradients each Adam update moves a weight by the learning rate.

    The linear schedule must reach its end over the optimizer updates, not over
    the train steps, so the total move is the sum of the schedule over `updates`.
    """
    params = {"head": {"kernel": np.zeros((2, 2), np.float32)}}
    config = _optimizer_config(
        learning_rate=1.0,
        schedule="linear",
        warmup_ratio=0.0,
        end_factor=0.0,
        clip_norm=0.0,
        weight_decay=0.0,
        eps=1e-12,
        accumulate_steps=2,
    )
    optimizer, _ = make_optimizer(config, params, train_steps, num_layers=0)
    state = optimizer.init(params)
    grads = jax.tree.map(np.ones_like, params)
    moved = params
    for _ in range(2 * updates):
        step_updates, state = optimizer.update(grads, state, moved)
        moved = optax.apply_updates(moved, step_updates)
    expected = sum(1.0 - index / updates for index in range(updates))
    np.testing.assert_allclose(moved["head"]["kernel"], -expected, rtol=1e-5)
