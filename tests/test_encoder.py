"""Encoder behaviour: dropout, outputs, classifier heads and student construction."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fsl_jax.models import Classifier, Encoder, EncoderConfig, select_layers, uniform_layers

SMALL = EncoderConfig(
    vocab_size=50,
    hidden_size=16,
    num_layers=3,
    num_heads=4,
    intermediate_size=32,
    max_position_embeddings=24,
)


@pytest.fixture(scope="module")
def small_batch():
    ids = np.array([[1, 5, 6, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0, 0]], np.int32)
    return ids, (ids > 0).astype(np.int32)


@pytest.fixture(scope="module")
def small_params(small_batch):
    ids, mask = small_batch
    return Encoder(SMALL).init(jax.random.key(0), ids, mask)["params"]


def test_dropout_differs_between_rngs(small_params, small_batch):
    ids, mask = small_batch
    model = Encoder(SMALL)

    def train_pass(seed):
        return model.apply(
            {"params": small_params},
            ids,
            mask,
            deterministic=False,
            rngs={"dropout": jax.random.key(seed)},
        )["last_hidden_state"]

    assert not np.allclose(train_pass(1), train_pass(2))


def test_eval_passes_are_bitwise_identical(small_params, small_batch):
    ids, mask = small_batch
    model = Encoder(SMALL)
    first = model.apply({"params": small_params}, ids, mask)["last_hidden_state"]
    second = model.apply({"params": small_params}, ids, mask)["last_hidden_state"]
    np.testing.assert_array_equal(first, second)


def test_train_mode_without_rng_raises(small_params, small_batch):
    ids, mask = small_batch
    with pytest.raises(ValueError, match="dropout key"):
        Encoder(SMALL).apply({"params": small_params}, ids, mask, deterministic=False)


def test_hidden_states_and_attentions_on_request(small_params, small_batch):
    ids, mask = small_batch
    outputs = Encoder(SMALL).apply(
        {"params": small_params}, ids, mask, output_hidden_states=True, output_attentions=True
    )
    assert len(outputs["hidden_states"]) == SMALL.num_layers + 1
    assert len(outputs["attentions"]) == SMALL.num_layers
    probs = np.asarray(outputs["attentions"][0])
    assert probs.shape == (2, SMALL.num_heads, 7, 7)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # Padding keys get no attention from any query.
    assert probs[1, :, :, 3:].max() == 0.0
    np.testing.assert_array_equal(outputs["hidden_states"][-1], outputs["last_hidden_state"])


def test_sequence_longer_than_positions_raises(small_params):
    ids = np.ones((1, 30), np.int32)
    with pytest.raises(ValueError, match="exceeds the 24 positions"):
        Encoder(SMALL).apply({"params": small_params}, ids, ids)


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_classifier_pooling_modes(small_batch, pooling):
    ids, mask = small_batch
    model = Classifier(SMALL, num_labels=3, pooling=pooling)
    params = model.init(jax.random.key(0), ids, mask)["params"]
    outputs = model.apply({"params": params}, ids, mask)
    assert outputs["logits"].shape == (2, 3)
    assert outputs["pooled"].shape == (2, SMALL.hidden_size)
    assert ("pooler" in params["encoder"]) == (pooling == "pooler")


def test_mean_pooling_ignores_padding(small_batch):
    ids, mask = small_batch
    model = Classifier(SMALL, num_labels=2, pooling="mean")
    params = model.init(jax.random.key(0), ids, mask)["params"]
    short = model.apply({"params": params}, ids[:, :5], mask[:, :5])["pooled"]
    long = model.apply({"params": params}, ids, mask)["pooled"]
    np.testing.assert_allclose(short, long, atol=1e-5)


def test_classifier_unknown_pooling_raises(small_batch):
    ids, mask = small_batch
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        Classifier(SMALL, num_labels=2, pooling="max").init(jax.random.key(0), ids, mask)


def test_inputs_embeds_match_input_ids(small_params, small_batch):
    ids, mask = small_batch
    model = Encoder(SMALL)
    embeds = model.apply({"params": small_params}, ids, method=Encoder.embed_tokens)
    from_ids = model.apply({"params": small_params}, ids, mask)["last_hidden_state"]
    from_embeds = model.apply({"params": small_params}, ids, mask, inputs_embeds=embeds)[
        "last_hidden_state"
    ]
    np.testing.assert_allclose(from_ids, from_embeds, atol=1e-6)


def test_uniform_layers_keeps_first_and_last():
    assert uniform_layers(6, 3) == [0, 2, 5]  # 2.5 rounds to 2 (round half to even)
    assert uniform_layers(6, 2) == [0, 5]
    assert uniform_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="between 1 and 6"):
        uniform_layers(6, 7)


def test_select_layers_builds_student(small_params, small_batch):
    ids, mask = small_batch
    student_config, student_params = select_layers(small_params, SMALL, [0, 2])
    assert student_config.num_layers == 2
    np.testing.assert_array_equal(
        student_params["layer_1"]["attention"]["query"]["kernel"],
        small_params["layer_2"]["attention"]["query"]["kernel"],
    )
    outputs = Encoder(student_config).apply({"params": student_params}, ids, mask)
    assert outputs["last_hidden_state"].shape == (2, 7, SMALL.hidden_size)


@pytest.mark.parametrize(
    "layers, message", [([0, 3], "do not exist"), ([1, 1], "repeat"), ([], "empty")]
)
def test_select_layers_rejects_invalid(small_params, layers, message):
    with pytest.raises(ValueError, match=message):
        select_layers(small_params, SMALL, layers)


def test_config_rejects_unsupported_values():
    with pytest.raises(ValueError, match="Unsupported model_type 'gpt2'"):
        EncoderConfig(model_type="gpt2")
    with pytest.raises(ValueError, match="not divisible"):
        EncoderConfig(hidden_size=10, num_heads=4)
    with pytest.raises(ValueError, match="Unsupported dtype"):
        EncoderConfig(dtype="int8")


def test_jit_gradients_are_finite(small_batch):
    ids, mask = small_batch
    model = Classifier(SMALL, num_labels=2)
    params = model.init(jax.random.key(0), ids, mask)["params"]

    @jax.jit
    def loss(params):
        logits = model.apply(
            {"params": params}, ids, mask, deterministic=False, rngs={"dropout": jax.random.key(3)}
        )["logits"]
        return -jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    grads = jax.grad(loss)(params)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(grads))


def test_normalized_head_gradients_finite_with_filler_row():
    ids = np.array([[1, 5, 6, 2], [0, 0, 0, 0]], np.int32)  # second row: batch filler
    mask = (ids > 0).astype(np.int32)
    model = Classifier(SMALL, num_labels=2, pooling="mean", normalize=True, head_scale=20.0)
    params = model.init(jax.random.key(0), ids, mask)["params"]
    weights = jnp.array([1.0, 0.0])

    def loss(params):
        logits = model.apply({"params": params}, ids, mask)["logits"]
        return -jnp.sum(jax.nn.log_softmax(logits)[:, 0] * weights)

    grads = jax.grad(loss)(params)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(grads))
