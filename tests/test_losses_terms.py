"""Tests of the loss terms on synthetic model outputs (no model needed)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import rel_entr, softmax

from fsl_jax.losses import LOSS_TERMS
from fsl_jax.losses.terms import cross_entropy, soft_target_kl

STUDENT = {"layers": 4, "width": 16, "heads": 2}
TEACHER = {"layers": 8, "width": 24, "heads": 4}
NUM_CLASSES = 3


def _probabilities_over_real_keys(rng, batch, heads, tokens, lengths):
    """Attention maps: a softmax over each row's real keys, padding entries set to noise."""
    scores = rng.normal(size=(batch, heads, tokens, tokens))
    real = np.arange(tokens)[None, :] < lengths[:, None]
    scores = np.where(real[:, None, None, :], scores, -np.inf)
    with np.errstate(invalid="ignore"):  # a row without real tokens is all -inf
        probs = softmax(scores, axis=-1)
    block = real[:, None, :, None] & real[:, None, None, :]
    return np.where(block, probs, rng.uniform(size=probs.shape))


def make_outputs(rng, lengths, tokens, *, layers, width, heads):
    """Random model outputs in the design contract layout, with noise in padding positions."""
    batch = len(lengths)
    hidden_states = tuple(rng.normal(size=(batch, tokens, width)) for _ in range(layers + 1))
    return {
        "logits": rng.normal(size=(batch, NUM_CLASSES)) * 2.0,
        "pooled": rng.normal(size=(batch, width)),
        "last_hidden_state": hidden_states[-1],
        "hidden_states": hidden_states,
        "attentions": tuple(
            _probabilities_over_real_keys(rng, batch, heads, tokens, lengths) for _ in range(layers)
        ),
    }


def make_batch(lengths, tokens, example_mask=None):
    lengths = np.asarray(lengths)
    batch = len(lengths)
    return {
        "attention_mask": (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int32),
        "labels": np.arange(batch, dtype=np.int32) % NUM_CLASSES,
        "example_mask": (
            np.ones(batch, np.float32) if example_mask is None else np.asarray(example_mask)
        ),
    }


def repad(outputs, lengths, tokens, rng):
    """Copy the real positions of `outputs` into arrays of length `tokens`, with new noise."""
    real = np.arange(tokens)[None, :] < np.asarray(lengths)[:, None]

    def token_array(array):
        noise = rng.normal(size=array.shape[:1] + (tokens,) + array.shape[2:])
        return np.where(real[:, :, None], array[:, :tokens], noise)

    def attention_array(array):
        block = real[:, None, :, None] & real[:, None, None, :]
        noise = rng.uniform(size=array.shape[:2] + (tokens, tokens))
        return np.where(block, array[:, :, :tokens, :tokens], noise)

    return {
        "logits": outputs["logits"],
        "pooled": outputs["pooled"],
        "last_hidden_state": token_array(outputs["last_hidden_state"]),
        "hidden_states": tuple(token_array(state) for state in outputs["hidden_states"]),
        "attentions": tuple(attention_array(probs) for probs in outputs["attentions"]),
    }


def compute_term(name, student, teacher, batch, options=None, temperature=2.0, rng_seed=0):
    """Call a registered term with its default options, creating params when it has any."""
    spec = LOSS_TERMS[name]
    arguments = {**spec.option_defaults, **(options or {})}
    if spec.uses_temperature:
        arguments["temperature"] = temperature
    if spec.init_params is not None:
        arguments["params"] = spec.init_params(
            jax.random.key(rng_seed), student, teacher, **arguments
        )
    return spec.fn(student, teacher, batch, **arguments)


# Every term with the option values that change which positions it reads.
TERM_CASES = [
    ("kd", {}),
    ("ce", {}),
    ("logits_mse", {}),
    ("hidden_mse", {}),
    ("hidden_mse", {"include_embeddings": True, "share_projection": True}),
    ("hidden_mse", {"layer_map": "last_k", "last_k": 2}),
    ("attention_kl", {}),
    ("attention_mse", {}),
    ("cosine", {"pooling": "cls"}),
    ("cosine", {"pooling": "mean"}),
    ("cosine", {"pooling": "pooled"}),
    ("pkd", {}),
]
CASE_IDS = [
    f"{name}-{'-'.join(map(str, options.values())) or 'default'}" for name, options in TERM_CASES
]


# ---------------------------------------------------------------------------
# Soft-target KL
# ---------------------------------------------------------------------------


def _kd(student_logits, teacher_logits, temperature=1.0, example_mask=None):
    batch = {} if example_mask is None else {"example_mask": jnp.asarray(example_mask)}
    return soft_target_kl(
        {"logits": jnp.asarray(student_logits, jnp.float32)},
        {"logits": jnp.asarray(teacher_logits, jnp.float32)},
        batch,
        temperature=temperature,
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_identical_logits_exactly_zero(temperature):
    logits = np.random.default_rng(0).normal(size=(6, 5)) * 3.0
    assert float(_kd(logits, logits, temperature)) == 0.0


def test_kd_random_logits_non_negative():
    rng = np.random.default_rng(1)
    for _ in range(20):
        value = float(_kd(rng.normal(size=(8, 4)) * 3, rng.normal(size=(8, 4)) * 3))
        assert value >= 0.0


def test_kd_matches_hand_computed_direction():
    teacher, student = [[3.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]
    # softmax([3, 0, 0]) = [e^3, 1, 1] / (e^3 + 2); the student is uniform (1/3 each).
    p_large = math.exp(3) / (math.exp(3) + 2)
    p_small = 1 / (math.exp(3) + 2)
    teacher_to_student = p_large * math.log(3 * p_large) + 2 * p_small * math.log(3 * p_small)
    student_to_teacher = (math.log(1 / (3 * p_large)) + 2 * math.log(1 / (3 * p_small))) / 3

    assert float(_kd(student, teacher)) == pytest.approx(teacher_to_student, rel=1e-5)
    assert float(_kd(teacher, student)) == pytest.approx(student_to_teacher, rel=1e-5)
    assert abs(teacher_to_student - student_to_teacher) > 0.2


def test_kd_at_temperature_one_is_plain_kl():
    rng = np.random.default_rng(2)
    student, teacher = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    expected = rel_entr(softmax(teacher, axis=-1), softmax(student, axis=-1)).sum(-1).mean()
    assert float(_kd(student, teacher, 1.0)) == pytest.approx(expected, rel=1e-5)


def test_kd_scales_softened_kl_by_t_squared():
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    softened = rel_entr(softmax(teacher / 4, axis=-1), softmax(student / 4, axis=-1)).sum(-1)
    assert float(_kd(student, teacher, 4.0)) == pytest.approx(16 * softened.mean(), rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_kd_gradient_norm_bounded_across_temperature(seed):
    rng = np.random.default_rng(seed)
    student = jnp.asarray(rng.normal(size=(8, 5)) * 2, jnp.float32)
    teacher = rng.normal(size=(8, 5)) * 2

    def gradient_norm(temperature, t_squared_factor):
        def loss(logits):
            value = _kd(logits, teacher, temperature)
            return value if t_squared_factor else value / temperature**2

        return float(jnp.linalg.norm(jax.grad(loss)(student)))

    ratio = gradient_norm(1.0, True) / gradient_norm(4.0, True)
    assert 0.5 <= ratio <= 2.0
    # Without the T^2 factor the gradient at T=4 is about 1/T^2 as large.
    assert gradient_norm(1.0, False) / gradient_norm(4.0, False) > 4.0


def test_kd_excludes_masked_rows():
    rng = np.random.default_rng(4)
    student, teacher = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    masked = _kd(student, teacher, 2.0, example_mask=[1, 1, 1, 0])
    assert float(masked) == pytest.approx(float(_kd(student[:3], teacher[:3], 2.0)), rel=1e-6)


# ---------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------


def test_ce_hard_labels_match_reference():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4, NUM_CLASSES))
    batch = make_batch([3, 3, 3, 3], 4)
    value = cross_entropy({"logits": jnp.asarray(logits)}, None, batch)
    log_probs = np.log(softmax(logits, axis=-1))
    expected = -log_probs[np.arange(4), batch["labels"]].mean()
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_ce_uses_soft_labels_when_present():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(4, NUM_CLASSES))
    soft_labels = softmax(rng.normal(size=(4, NUM_CLASSES)), axis=-1)
    batch = {**make_batch([2] * 4, 4, example_mask=[1, 1, 0, 1]), "soft_labels": soft_labels}
    log_probs = np.log(softmax(logits, axis=-1))
    expected = -(soft_labels * log_probs).sum(-1)[[0, 1, 3]].mean()

    value = cross_entropy({"logits": jnp.asarray(logits)}, None, batch)
    assert float(value) == pytest.approx(expected, rel=1e-5)

    hard = cross_entropy({"logits": jnp.asarray(logits)}, None, batch, use_soft_labels=False)
    expected_hard = -log_probs[np.arange(4), batch["labels"]][[0, 1, 3]].mean()
    assert float(hard) == pytest.approx(expected_hard, rel=1e-5)


def test_ce_one_hot_soft_labels_equal_hard_labels():
    rng = np.random.default_rng(7)
    logits = jnp.asarray(rng.normal(size=(4, NUM_CLASSES)))
    batch = make_batch([2] * 4, 4)
    one_hot = {**batch, "soft_labels": np.eye(NUM_CLASSES, dtype=np.float32)[batch["labels"]]}
    hard = cross_entropy({"logits": logits}, None, batch)
    assert float(cross_entropy({"logits": logits}, None, one_hot)) == pytest.approx(float(hard))


# ---------------------------------------------------------------------------
# Reference values of the feature terms
# ---------------------------------------------------------------------------


def _uniform_teacher_layer(student_layer):
    return student_layer * TEACHER["layers"] // STUDENT["layers"]


def _project(params, states):
    return states @ np.asarray(params["kernel"]) + np.asarray(params["bias"])


def test_hidden_mse_matches_loop_reference():
    rng = np.random.default_rng(8)
    lengths = np.array([5, 2, 8])
    student = make_outputs(rng, lengths, 8, **STUDENT)
    teacher = make_outputs(rng, lengths, 8, **TEACHER)
    spec = LOSS_TERMS["hidden_mse"]
    params = spec.init_params(jax.random.key(0), student, teacher, **spec.option_defaults)
    value = spec.fn(student, teacher, make_batch(lengths, 8), params=params)

    per_example = []
    for row, length in enumerate(lengths):
        per_pair = []
        for layer in range(1, STUDENT["layers"] + 1):
            teacher_layer = _uniform_teacher_layer(layer)
            projected = _project(
                params[f"student_{layer}_teacher_{teacher_layer}"],
                student["hidden_states"][layer][row, :length],
            )
            target = teacher["hidden_states"][teacher_layer][row, :length]
            per_pair.append(np.mean((projected - target) ** 2))
        per_example.append(np.mean(per_pair))
    assert float(value) == pytest.approx(np.mean(per_example), rel=1e-4)


def _average_heads(probs):
    return probs.mean(axis=1, keepdims=True)


def test_attention_terms_match_loop_reference():
    rng = np.random.default_rng(9)
    lengths = np.array([6, 3])
    student = make_outputs(rng, lengths, 8, **STUDENT)
    teacher = make_outputs(rng, lengths, 8, **TEACHER)
    batch = make_batch(lengths, 8)
    epsilon = 1e-8

    kl_rows, mse_rows = [], []
    for row, length in enumerate(lengths):
        kl_pairs, mse_pairs = [], []
        for layer in range(1, STUDENT["layers"] + 1):
            # The head counts differ (2 vs 4), so both sides are averaged over heads.
            p_s = _average_heads(student["attentions"][layer - 1])[row, :, :length, :length]
            teacher_probs = teacher["attentions"][_uniform_teacher_layer(layer) - 1]
            p_t = _average_heads(teacher_probs)[row, :, :length, :length]
            log_ratio = np.log(np.maximum(p_t, epsilon)) - np.log(np.maximum(p_s, epsilon))
            kl_pairs.append((p_t * log_ratio).sum(-1).mean())
            mse_pairs.append(((p_s - p_t) ** 2).mean())
        kl_rows.append(np.mean(kl_pairs))
        mse_rows.append(np.mean(mse_pairs))

    kl = LOSS_TERMS["attention_kl"].fn(student, teacher, batch)
    mse = LOSS_TERMS["attention_mse"].fn(student, teacher, batch)
    assert float(kl) == pytest.approx(np.mean(kl_rows), rel=1e-4)
    assert float(mse) == pytest.approx(np.mean(mse_rows), rel=1e-4)


def test_attention_kl_identical_maps_zero():
    rng = np.random.default_rng(10)
    lengths = np.array([6, 3])
    outputs = make_outputs(rng, lengths, 8, **STUDENT)
    batch = make_batch(lengths, 8)
    assert float(LOSS_TERMS["attention_kl"].fn(outputs, outputs, batch)) == 0.0
    assert float(LOSS_TERMS["attention_mse"].fn(outputs, outputs, batch)) == 0.0


def test_attention_same_heads_compared_one_to_one():
    rng = np.random.default_rng(11)
    lengths = np.array([4])
    student = make_outputs(rng, lengths, 4, layers=1, width=8, heads=2)
    teacher = {"attentions": (student["attentions"][0][:, ::-1],)}  # heads swapped
    batch = make_batch(lengths, 4)
    # Swapping heads keeps the head average, so only a per-head comparison detects it.
    assert float(LOSS_TERMS["attention_mse"].fn(student, teacher, batch)) > 1e-4


def test_cosine_mean_pooling_matches_reference():
    rng = np.random.default_rng(12)
    lengths = np.array([5, 1, 7])
    student = make_outputs(rng, lengths, 8, **STUDENT)
    teacher = make_outputs(rng, lengths, 8, **TEACHER)
    spec = LOSS_TERMS["cosine"]
    params = spec.init_params(
        jax.random.key(1), student, teacher, pooling="mean", projection="auto"
    )
    value = spec.fn(student, teacher, make_batch(lengths, 8), params=params, pooling="mean")

    expected = []
    for row, length in enumerate(lengths):
        s = _project(params, student["last_hidden_state"][row, :length].mean(0))
        t = teacher["last_hidden_state"][row, :length].mean(0)
        expected.append(1 - s @ t / (np.linalg.norm(s) * np.linalg.norm(t)))
    assert float(value) == pytest.approx(np.mean(expected), rel=1e-4)


def test_pkd_matches_reference_same_width():
    rng = np.random.default_rng(13)
    lengths = np.array([5, 8])
    student = make_outputs(rng, lengths, 8, layers=2, width=16, heads=2)
    teacher = make_outputs(rng, lengths, 8, layers=4, width=16, heads=2)
    spec = LOSS_TERMS["pkd"]
    assert spec.init_params(jax.random.key(0), student, teacher, **spec.option_defaults) == {}
    value = spec.fn(student, teacher, make_batch(lengths, 8), layer_map=[(1, 3)])

    s = student["hidden_states"][1][:, 0]
    t = teacher["hidden_states"][3][:, 0]
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    assert float(value) == pytest.approx(((s - t) ** 2).sum(-1).mean(), rel=1e-5)


# ---------------------------------------------------------------------------
# Masking: padding and example_mask
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", TERM_CASES, ids=CASE_IDS)
def test_term_invariant_to_padding_length(name, options):
    rng = np.random.default_rng(14)
    lengths = np.array([8, 3, 5])
    student_long = make_outputs(rng, lengths, 16, **STUDENT)
    teacher_long = make_outputs(rng, lengths, 16, **TEACHER)
    student_short = repad(student_long, lengths, 8, rng)
    teacher_short = repad(teacher_long, lengths, 8, rng)

    long = compute_term(name, student_long, teacher_long, make_batch(lengths, 16), options)
    short = compute_term(name, student_short, teacher_short, make_batch(lengths, 8), options)
    assert np.isfinite(float(long))
    assert float(long) > 0.0
    assert float(short) == pytest.approx(float(long), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name, options", TERM_CASES, ids=CASE_IDS)
def test_term_excludes_masked_examples(name, options):
    rng = np.random.default_rng(15)
    lengths = np.array([4, 7, 2, 6])
    student = make_outputs(rng, lengths, 8, **STUDENT)
    teacher = make_outputs(rng, lengths, 8, **TEACHER)
    first_three = jax.tree.map(lambda x: x[:3], (student, teacher))

    masked = compute_term(name, student, teacher, make_batch(lengths, 8, [1, 1, 1, 0]), options)
    subset = compute_term(name, *first_three, make_batch(lengths[:3], 8), options)
    assert float(masked) == pytest.approx(float(subset), rel=1e-5)


@pytest.mark.parametrize("name, options", TERM_CASES, ids=CASE_IDS)
def test_term_no_real_examples_gives_zero(name, options):
    rng = np.random.default_rng(16)
    lengths = np.array([3, 0])
    student = make_outputs(rng, lengths, 4, **STUDENT)
    teacher = make_outputs(rng, lengths, 4, **TEACHER)
    value = compute_term(name, student, teacher, make_batch(lengths, 4, [0.0, 0.0]), options)
    assert float(value) == 0.0


@pytest.mark.parametrize("name, options", TERM_CASES, ids=CASE_IDS)
def test_term_gradient_ignores_padding(name, options):
    rng = np.random.default_rng(17)
    lengths = np.array([3, 6])
    student = make_outputs(rng, lengths, 8, **STUDENT)
    teacher = make_outputs(rng, lengths, 8, **TEACHER)
    batch = make_batch(lengths, 8, [1.0, 0.0])

    student = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), student)
    gradients = jax.grad(lambda outputs: compute_term(name, outputs, teacher, batch, options))(
        student
    )
    for gradient in jax.tree.leaves(gradients):
        assert bool(jnp.all(jnp.isfinite(gradient)))
        # Row 1 has example_mask 0, so nothing in it may receive a gradient.
        assert float(jnp.max(jnp.abs(gradient[1]))) == 0.0
    for key in ("last_hidden_state", "hidden_states"):
        for gradient in jax.tree.leaves(gradients[key]):
            assert float(jnp.max(jnp.abs(gradient[0, 3:]))) == 0.0
    for gradient in gradients["attentions"]:
        assert float(jnp.max(jnp.abs(gradient[0, :, 3:, :]))) == 0.0
        assert float(jnp.max(jnp.abs(gradient[0, :, :, 3:]))) == 0.0


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_hidden_mse_missing_hidden_states_names_flag():
    outputs = {"logits": np.zeros((2, NUM_CLASSES))}
    with pytest.raises(KeyError, match="output_hidden_states=True"):
        LOSS_TERMS["hidden_mse"].fn(outputs, outputs, make_batch([2, 2], 2))


def test_hidden_mse_missing_projection_params_raises():
    rng = np.random.default_rng(18)
    lengths = np.array([3])
    student = make_outputs(rng, lengths, 4, **STUDENT)
    teacher = make_outputs(rng, lengths, 4, **TEACHER)
    with pytest.raises(ValueError, match="objective.init"):
        LOSS_TERMS["hidden_mse"].fn(student, teacher, make_batch(lengths, 4))


def test_attention_mask_shape_mismatch_raises():
    rng = np.random.default_rng(19)
    lengths = np.array([3, 2])
    student = make_outputs(rng, lengths, 4, **STUDENT)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        LOSS_TERMS["attention_mse"].fn(student, student, make_batch(lengths, 6))


def test_cosine_unknown_pooling_lists_valid():
    rng = np.random.default_rng(20)
    student = make_outputs(rng, np.array([3]), 4, **STUDENT)
    with pytest.raises(ValueError, match="'cls', 'mean', 'pooled'"):
        LOSS_TERMS["cosine"].fn(student, student, make_batch([3], 4), pooling="max")


def test_ce_skips_rows_without_labels():
    logits = jnp.array([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    batch = {
        "labels": jnp.array([0, 0, 1]),
        "example_mask": jnp.ones(3),
        "label_mask": jnp.array([1.0, 0.0, 1.0]),
    }
    labelled_only = {"labels": jnp.array([0, 1]), "example_mask": jnp.ones(2)}
    expected = LOSS_TERMS["ce"].fn({"logits": logits[jnp.array([0, 2])]}, None, labelled_only)
    assert float(LOSS_TERMS["ce"].fn({"logits": logits}, None, batch)) == pytest.approx(
        float(expected)
    )
