"""Tests of the composed distillation objective, its schedules and layer maps."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fsl_jax.losses import (
    LOSS_TERMS,
    build_objective,
    map_layers,
    parse_schedule,
    register_term,
)
from fsl_jax.losses.masking import mean_over_examples

NUM_CLASSES = 3


def make_outputs(rng, batch, tokens, *, layers, width, heads):
    """Random float32 outputs in the design contract layout."""
    hidden_states = tuple(
        jnp.asarray(rng.normal(size=(batch, tokens, width)), jnp.float32) for _ in range(layers + 1)
    )
    attentions = tuple(
        jax.nn.softmax(jnp.asarray(rng.normal(size=(batch, heads, tokens, tokens))), axis=-1)
        for _ in range(layers)
    )
    return {
        "logits": jnp.asarray(rng.normal(size=(batch, NUM_CLASSES)), jnp.float32),
        "pooled": jnp.asarray(rng.normal(size=(batch, width)), jnp.float32),
        "last_hidden_state": hidden_states[-1],
        "hidden_states": hidden_states,
        "attentions": attentions,
    }


def make_batch(batch=4, tokens=8):
    lengths = np.array([tokens, tokens // 2, 3, tokens - 1])[:batch]
    return {
        "attention_mask": (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int32),
        "labels": np.arange(batch, dtype=np.int32) % NUM_CLASSES,
        "example_mask": np.array([1, 1, 1, 0], np.float32)[:batch],
    }


@pytest.fixture
def outputs():
    rng = np.random.default_rng(0)
    student = make_outputs(rng, 4, 8, layers=2, width=8, heads=2)
    teacher = make_outputs(rng, 4, 8, layers=4, width=12, heads=4)
    return student, teacher, make_batch()


ALL_TERMS_CONFIG = {
    "temperature": {"schedule": "linear_decay", "value": 4.0, "end": 1.0, "steps": 100},
    "terms": {
        "kd": {"weight": 0.5},
        "ce": {"weight": {"schedule": "linear_warmup", "value": 1.0, "steps": 10}},
        "logits_mse": {"weight": 0.1},
        "hidden_mse": {"weight": 1.0, "include_embeddings": True},
        "attention_kl": {"weight": 1.0},
        "attention_mse": {"weight": 1.0, "layer_map": "last_k", "last_k": 1},
        "cosine": {"weight": 1.0, "pooling": "mean"},
        "pkd": {"weight": 1.0, "share_projection": True},
    },
}


# ---------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------


def test_objective_sums_weighted_terms(outputs):
    student, teacher, batch = outputs
    objective = build_objective(ALL_TERMS_CONFIG)
    params = objective.init(jax.random.key(0), student, teacher)
    loss, metrics = objective(params, student, teacher, batch, 5)

    expected = sum(metrics[f"{name}_weight"] * metrics[name] for name in objective.term_names)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(metrics["ce_weight"]) == pytest.approx(0.5)
    assert float(metrics["kd_weight"]) == pytest.approx(0.5)
    assert float(metrics["temperature"]) == pytest.approx(4.0 - 3.0 * 5 / 100)
    assert set(objective.term_names) == set(ALL_TERMS_CONFIG["terms"])


def test_objective_jit_matches_eager(outputs):
    student, teacher, batch = outputs
    objective = build_objective(ALL_TERMS_CONFIG)
    params = objective.init(jax.random.key(0), student, teacher)

    eager_loss, eager_metrics = objective(params, student, teacher, batch, 7)
    jit_loss, jit_metrics = jax.jit(objective)(params, student, teacher, batch, jnp.int32(7))
    assert float(jit_loss) == pytest.approx(float(eager_loss), rel=1e-5)
    for name, value in eager_metrics.items():
        assert float(jit_metrics[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-7)


def test_objective_traced_step_compiles_once(outputs):
    student, teacher, batch = outputs
    objective = build_objective(ALL_TERMS_CONFIG)
    params = objective.init(jax.random.key(0), student, teacher)
    traces = []

    @jax.jit
    def step_fn(step):
        traces.append(step)
        return objective(params, student, teacher, batch, step)[1]["temperature"]

    values = [float(step_fn(jnp.int32(step))) for step in (0, 50, 100, 200)]
    assert values == pytest.approx([4.0, 2.5, 1.0, 1.0])
    assert len(traces) == 1


def test_projection_params_receive_gradient(outputs):
    student, teacher, batch = outputs
    objective = build_objective(ALL_TERMS_CONFIG)
    params = objective.init(jax.random.key(0), student, teacher)
    assert set(params) == {"hidden_mse", "cosine", "pkd"}

    gradients = jax.grad(lambda p: objective(p, student, teacher, batch, 5)[0])(params)
    for path, gradient in jax.tree_util.tree_leaves_with_path(gradients):
        assert bool(jnp.all(jnp.isfinite(gradient))), path
        assert float(jnp.linalg.norm(gradient)) > 0.0, path


def test_student_gradient_only_no_teacher_gradient(outputs):
    student, teacher, batch = outputs
    objective = build_objective({"terms": {"kd": {"weight": 1.0}}})
    gradient = jax.grad(lambda t: objective({}, student, t, batch, 0)[0])(teacher)
    assert float(jnp.max(jnp.abs(gradient["logits"]))) == 0.0


def test_init_params_layout(outputs):
    student, teacher, _ = outputs
    per_layer = build_objective({"terms": {"hidden_mse": {"weight": 1.0}}})
    params = per_layer.init(jax.random.key(0), student, teacher)
    assert sorted(params["hidden_mse"]) == ["student_1_teacher_2", "student_2_teacher_4"]
    assert params["hidden_mse"]["student_1_teacher_2"]["kernel"].shape == (8, 12)
    assert params["hidden_mse"]["student_1_teacher_2"]["bias"].shape == (12,)

    shared = build_objective({"terms": {"hidden_mse": {"weight": 1.0, "share_projection": True}}})
    assert list(shared.init(jax.random.key(0), student, teacher)["hidden_mse"]) == ["shared"]


def test_init_accepts_eval_shape_outputs(outputs):
    student, teacher, _ = outputs
    shapes = jax.eval_shape(lambda s, t: (s, t), student, teacher)
    objective = build_objective(ALL_TERMS_CONFIG)
    from_shapes = objective.init(jax.random.key(0), *shapes)
    from_arrays = objective.init(jax.random.key(0), student, teacher)
    assert jax.tree.structure(from_shapes) == jax.tree.structure(from_arrays)


def test_init_no_params_when_widths_match():
    rng = np.random.default_rng(1)
    student = make_outputs(rng, 2, 4, layers=2, width=8, heads=2)
    teacher = make_outputs(rng, 2, 4, layers=4, width=8, heads=2)
    objective = build_objective(
        {"terms": {"hidden_mse": {"weight": 1.0}, "cosine": {"weight": 1.0}}}
    )
    assert objective.init(jax.random.key(0), student, teacher) == {}

    forced = build_objective({"terms": {"cosine": {"weight": 1.0, "projection": "linear"}}})
    assert forced.init(jax.random.key(0), student, teacher)["cosine"]["kernel"].shape == (8, 8)


def test_init_term_key_independent_of_other_terms(outputs):
    student, teacher, _ = outputs
    alone = build_objective({"terms": {"cosine": {"weight": 1.0}}})
    together = build_objective({"terms": {"kd": {"weight": 1.0}, "cosine": {"weight": 1.0}}})
    kernel_alone = alone.init(jax.random.key(3), student, teacher)["cosine"]["kernel"]
    kernel_together = together.init(jax.random.key(3), student, teacher)["cosine"]["kernel"]
    np.testing.assert_array_equal(kernel_alone, kernel_together)


def test_required_outputs_follow_active_terms():
    assert build_objective({"terms": {"kd": {"weight": 1.0}}}).required_outputs == frozenset()
    hidden = build_objective({"terms": {"pkd": {"weight": 1.0}}})
    assert hidden.required_outputs == {"hidden_states"}
    assert build_objective(ALL_TERMS_CONFIG).required_outputs == {"hidden_states", "attentions"}


def test_zero_weight_term_not_computed(outputs):
    student, teacher, batch = outputs
    config = {"terms": {"kd": {"weight": 1.0}, "hidden_mse": {"weight": 0.0}}}
    objective = build_objective(config)
    assert objective.term_names == ("kd",)
    assert objective.required_outputs == frozenset()

    logits_only = ({"logits": student["logits"]}, {"logits": teacher["logits"]})
    _, metrics = objective({}, *logits_only, batch, 0)
    assert "hidden_mse" not in metrics


def test_all_zero_weights_raise():
    with pytest.raises(ValueError, match="weight 0"):
        build_objective({"terms": {"kd": {"weight": 0.0}}})


def test_ce_only_needs_no_teacher(outputs):
    student, _, batch = outputs
    objective = build_objective({"terms": {"ce": {"weight": 1.0}}})
    assert not objective.requires_teacher
    loss, _ = objective(None, student, None, batch, 0)
    assert np.isfinite(float(loss))


def test_missing_teacher_names_terms(outputs):
    student, _, batch = outputs
    objective = build_objective({"terms": {"kd": {"weight": 1.0}, "ce": {"weight": 1.0}}})
    with pytest.raises(ValueError, match=r"\['kd'\]"):
        objective({}, student, None, batch, 0)


def test_accepts_config_dict(outputs):
    student, teacher, batch = outputs
    config = ml_collections.ConfigDict(ALL_TERMS_CONFIG)
    objective = build_objective(config)
    params = objective.init(jax.random.key(0), student, teacher)
    from_dict = build_objective(ALL_TERMS_CONFIG)
    assert float(objective(params, student, teacher, batch, 3)[0]) == pytest.approx(
        float(from_dict(params, student, teacher, batch, 3)[0])
    )


def test_second_entry_of_same_term(outputs):
    student, teacher, batch = outputs
    config = {
        "terms": {
            "hidden_mse": {"weight": 1.0, "layer_map": [(1, 1)]},
            "hidden_mse_last": {"term": "hidden_mse", "weight": 2.0, "layer_map": [(2, 4)]},
        }
    }
    objective = build_objective(config)
    params = objective.init(jax.random.key(0), student, teacher)
    assert list(params["hidden_mse"]) == ["student_1_teacher_1"]
    assert list(params["hidden_mse_last"]) == ["student_2_teacher_4"]
    loss, metrics = objective(params, student, teacher, batch, 0)
    expected = metrics["hidden_mse"] + 2.0 * metrics["hidden_mse_last"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


# ---------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------


def test_unknown_term_lists_known_terms():
    with pytest.raises(ValueError, match="Known terms: .*'attention_kl'.*'kd'.*'pkd'"):
        build_objective({"terms": {"kd_loss": {"weight": 1.0}}})


def test_unknown_option_lists_valid_options():
    with pytest.raises(
        ValueError, match=r"\['pooling'\].*Valid options: \['include_embeddings', 'last_k'"
    ):
        build_objective({"terms": {"hidden_mse": {"weight": 1.0, "pooling": "mean"}}})


def test_temperature_as_term_option_points_to_distill_temperature():
    with pytest.raises(ValueError, match="distill.temperature"):
        build_objective({"terms": {"kd": {"weight": 1.0, "temperature": 2.0}}})


def test_missing_weight_raises():
    with pytest.raises(ValueError, match="distill.terms.kd is missing 'weight'"):
        build_objective({"terms": {"kd": {}}})


def test_negative_weight_raises():
    with pytest.raises(ValueError, match="must not be negative"):
        build_objective({"terms": {"kd": {"weight": -1.0}}})


def test_temperature_must_stay_positive():
    with pytest.raises(ValueError, match="positive at every step"):
        build_objective(
            {
                "temperature": {"schedule": "linear_warmup", "value": 4.0, "steps": 10},
                "terms": {"kd": {"weight": 1.0}},
            }
        )


def test_empty_terms_raise():
    with pytest.raises(ValueError, match="Known terms"):
        build_objective({"terms": {}})


# ---------------------------------------------------------------------------
# Registry: a new term is one function plus one config entry
# ---------------------------------------------------------------------------


@pytest.fixture
def margin_term():
    @register_term("test_logit_margin")
    def logit_margin(student, teacher, batch, *, margin: float = 1.0):
        """Hinge on the gap between teacher and student max logits."""
        gap = jnp.max(teacher["logits"], -1) - jnp.max(student["logits"], -1)
        return mean_over_examples(jax.nn.relu(gap - margin), batch)

    yield logit_margin
    del LOSS_TERMS["test_logit_margin"]


def test_registered_term_usable_from_config(margin_term, outputs):
    student, teacher, batch = outputs
    objective = build_objective({"terms": {"test_logit_margin": {"weight": 1.0, "margin": 0.0}}})
    loss, metrics = objective({}, student, teacher, batch, 0)
    expected = margin_term(student, teacher, batch, margin=0.0)
    assert float(loss) == pytest.approx(float(expected))
    assert "test_logit_margin" in metrics


def test_register_duplicate_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_term("kd")(lambda student, teacher, batch: 0.0)


def test_register_option_without_default_raises():
    def no_default(student, teacher, batch, *, scale):
        return 0.0

    with pytest.raises(TypeError, match="'scale'.*needs a default"):
        register_term("test_no_default")(no_default)
    assert "test_no_default" not in LOSS_TERMS


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        (2.5, {0: 2.5, 10: 2.5, 10_000: 2.5}),
        ({"schedule": "constant", "value": 0.3}, {0: 0.3, 99: 0.3}),
        (
            {"schedule": "linear_warmup", "value": 2.0, "steps": 100},
            {0: 0.0, 25: 0.5, 50: 1.0, 100: 2.0, 500: 2.0},
        ),
        (
            {"schedule": "linear_decay", "value": 4.0, "end": 1.0, "steps": 30},
            {0: 4.0, 10: 3.0, 30: 1.0, 90: 1.0},
        ),
    ],
    ids=["number", "constant", "linear_warmup", "linear_decay"],
)
def test_schedule_values_at_steps(spec, expected):
    schedule = parse_schedule(spec, "test")
    evaluate = jax.jit(schedule)
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value)
        assert float(evaluate(jnp.int32(step))) == pytest.approx(value)


def test_schedule_unknown_kind_lists_kinds():
    with pytest.raises(ValueError, match="'constant', 'linear_warmup', 'linear_decay'"):
        parse_schedule({"schedule": "cosine", "value": 1.0}, "distill.temperature")


def test_schedule_missing_key_named():
    with pytest.raises(ValueError, match=r"missing \['steps'\]"):
        parse_schedule({"schedule": "linear_warmup", "value": 1.0}, "w")


def test_schedule_unknown_key_named():
    with pytest.raises(ValueError, match=r"unknown \['end'\]"):
        parse_schedule({"schedule": "linear_warmup", "value": 1.0, "steps": 5, "end": 0.0}, "w")


def test_schedule_zero_steps_raises():
    with pytest.raises(ValueError, match="w.steps must be a positive integer, got 0"):
        parse_schedule({"schedule": "linear_decay", "value": 1.0, "end": 0.0, "steps": 0}, "w")


def test_schedule_non_number_raises():
    with pytest.raises(TypeError, match="w must be a number, got '0.5'"):
        parse_schedule("0.5", "w")


# ---------------------------------------------------------------------------
# Layer maps
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_student, num_teacher, expected_teacher_layers",
    [
        (4, 12, [3, 6, 9, 12]),
        (6, 12, [2, 4, 6, 8, 10, 12]),
        (3, 12, [4, 8, 12]),
        (5, 12, [3, 5, 8, 10, 12]),
        (4, 4, [1, 2, 3, 4]),
        (4, 2, [1, 1, 2, 2]),
    ],
)
def test_uniform_layer_map(num_student, num_teacher, expected_teacher_layers):
    pairs = map_layers(num_student, num_teacher, "uniform")
    assert pairs == list(zip(range(1, num_student + 1), expected_teacher_layers))


def test_last_k_layer_map():
    assert map_layers(4, 12, "last_k") == [(1, 9), (2, 10), (3, 11), (4, 12)]
    assert map_layers(4, 12, "last_k", k=2) == [(3, 11), (4, 12)]
    assert map_layers(6, 3, "last_k") == [(4, 1), (5, 2), (6, 3)]


def test_explicit_layer_maps():
    assert map_layers(3, 12, [4, 8, 12]) == [(1, 4), (2, 8), (3, 12)]
    assert map_layers(6, 12, [(1, 2), (5, 10)]) == [(1, 2), (5, 10)]
    assert map_layers(6, 12, [[1, 2], [5, 10]]) == [(1, 2), (5, 10)]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((4, 12, [(5, 3)]), r"student layer 5, but the student has layers 1..4"),
        ((4, 12, [(1, 13)]), r"teacher layer 13, but the teacher has layers 1..12"),
        ((4, 12, [(0, 3)]), r"student layer 0"),
        ((4, 12, [3, 6, 9]), r"one teacher layer per student layer \(4\), got 3"),
        ((4, 12, [(1, 2, 3)]), r"Invalid layer map entry \(1, 2, 3\)"),
        ((4, 12, []), r"at least one layer"),
        ((4, 12, "skip"), r"Unknown layer map 'skip'.*'uniform', 'last_k'"),
        ((0, 12, "uniform"), r"num_student_layers must be a positive integer, got 0"),
    ],
)
def test_layer_map_errors_name_values(arguments, message):
    with pytest.raises(ValueError, match=message):
        map_layers(*arguments)


def test_last_k_too_large_names_counts():
    with pytest.raises(ValueError, match=r"k=5 .*student has 4 and the teacher 12"):
        map_layers(4, 12, "last_k", k=5)


def test_k_with_uniform_raises():
    with pytest.raises(ValueError, match="k=2 applies only to the 'last_k' layer map"):
        map_layers(4, 12, "uniform", k=2)
