"""Distillation training on tiny models and real SST-2 batches: a frozen teacher and its cache."""

import dataclasses

import jax
import numpy as np
import optax
import pytest
from train_jobs import host_copy, load_sst2, tiny_classifier

from configs import common
from fsl_jax.data import batch_iterator
from fsl_jax.losses import build_objective
from fsl_jax.models import Classifier
from fsl_jax.train import distill
from fsl_jax.train.finetune import TrainSettings, init_params
from fsl_jax.train.mesh import make_mesh
from fsl_jax.train.optimizer import make_optimizer
from fsl_jax.train.state import create_train_state
from fsl_jax.train.steps import make_train_step

SEED = 13
BUCKETS = (32, 64)


def _distill_config(**weights):
    config = common.get_distill_config(common.get_base_config())
    for name, weight in weights.items():
        config.terms[name].weight = weight
    return config


@pytest.fixture(scope="module")
def sst2(data_dir, minilm_dir):
    """The labelled train split plus the dev texts as an unlabelled pool, and the label mask."""
    splits = load_sst2(data_dir, minilm_dir, max_length=64, seed=SEED)
    pool = dataclasses.replace(splits["dev"], labels=None, name="pool")
    transfer, label_mask = distill.concat_transfer_sets(splits["train"], pool)
    return transfer, label_mask


@pytest.fixture(scope="module")
def teacher():
    return tiny_classifier(num_layers=2, dropout=0.1, seed=1)


def _student(teacher_model, teacher_params, student_config, objective):
    """Build the student and the params tree the distillation step trains."""
    encoder_config, encoder_params = distill.build_student(
        student_config, teacher_model.config, teacher_params["encoder"]
    )
    student = Classifier(encoder_config, num_labels=2, pooling="mean", classifier_dropout=0.1)
    student_params = init_params(student, encoder_params, jax.random.PRNGKey(2))
    objective_params = distill.init_objective_params(
        objective, student, student_params, teacher_model, teacher_params, jax.random.PRNGKey(3)
    )
    return student, {"student": student_params, "objective": objective_params}


def _layer_student():
    config = common.get_distill_config(common.get_base_config()).student
    config.num_layers = 1
    return config


def _epoch(transfer, per_example, epoch, num_devices):
    batches = batch_iterator(
        transfer, 8, BUCKETS, shuffle=True, seed=SEED, epoch=epoch, num_devices=num_devices
    )
    return distill.add_per_example(batches, per_example)


class _RecordingObjective:
    """The real objective, with the teacher and student outputs added to its metrics."""

    def __init__(self, objective):
        self._objective = objective

    def __getattr__(self, name):
        return getattr(self._objective, name)

    def __call__(self, params, student_outputs, teacher_outputs, batch, step):
        loss, metrics = self._objective(params, student_outputs, teacher_outputs, batch, step)
        metrics = dict(metrics)
        metrics["teacher_logits"] = teacher_outputs["logits"]
        metrics["teacher_last_hidden"] = teacher_outputs["hidden_states"][-1]
        metrics["student_logits"] = student_outputs["logits"]
        return loss, metrics


def test_teacher_outputs_ignore_step_rng(teacher, sst2):
    """Dropout keys change the student's outputs, never the teacher's."""
    teacher_model, teacher_params = teacher
    transfer, label_mask = sst2
    objective = build_objective(_distill_config(hidden_mse=1.0))
    student, params = _student(teacher_model, teacher_params, _layer_student(), objective)
    loss_fn = jax.jit(
        distill.distillation_loss(student, teacher_model, _RecordingObjective(objective))
    )
    batch = next(_epoch(transfer, {"label_mask": label_mask}, 0, 1))

    outputs = [
        loss_fn(params, teacher_params, batch, jax.random.PRNGKey(key), step)[1]
        for key, step in ((0, 0), (1, 1))
    ]
    np.testing.assert_array_equal(outputs[0]["teacher_logits"], outputs[1]["teacher_logits"])
    np.testing.assert_array_equal(
        outputs[0]["teacher_last_hidden"], outputs[1]["teacher_last_hidden"]
    )
    assert not np.allclose(outputs[0]["student_logits"], outputs[1]["student_logits"])


def test_teacher_frozen_and_outside_optimizer(teacher, sst2):
    """After distillation steps the teacher is bitwise unchanged and has no optimizer state."""
    teacher_model, teacher_params = teacher
    transfer, label_mask = sst2
    objective = build_objective(_distill_config(hidden_mse=1.0))
    # A narrower fresh student, so hidden_mse trains projection params of its own.
    student_config = _layer_student()
    student_config.kind = "fresh"
    student_config.hidden_size = 16
    student_config.num_heads = 2
    student_config.intermediate_size = 32
    student, params = _student(teacher_model, teacher_params, student_config, objective)
    assert jax.tree.leaves(params["objective"]), "the objective should have projection params"

    mesh = make_mesh(2)
    optimizer, _ = make_optimizer(common.get_base_config().optimizer, params, 3, num_layers=1)
    state = create_train_state(
        params, optimizer, seed=SEED, mesh=mesh, teacher_params=teacher_params
    )
    train_step = make_train_step(
        distill.distillation_loss(student, teacher_model, objective), optimizer, state, mesh
    )
    teacher_before = host_copy(teacher_params)
    student_before = host_copy(params)
    for batch in list(_epoch(transfer, {"label_mask": label_mask}, 0, 2))[:3]:
        state, metrics = train_step(state, batch)
        assert np.isfinite(metrics["loss"])

    for path, value in jax.tree_util.tree_leaves_with_path(state.teacher_params):
        expected = teacher_before
        for entry in path:
            expected = expected[entry.key]
        np.testing.assert_array_equal(value, expected, err_msg=jax.tree_util.keystr(path))
    for name in ("student", "objective"):
        before = jax.tree.leaves(student_before[name])
        after = jax.tree.leaves(host_copy(state.params[name]))
        assert any(not np.array_equal(old, new) for old, new in zip(before, after)), name

    first_moments = optax.tree_utils.tree_get(state.opt_state, "mu")
    assert jax.tree.structure(first_moments) == jax.tree.structure(state.params)
    param_count = distill.count_params(state.params)
    teacher_count = distill.count_params(state.teacher_params)
    # Adam keeps two moments per trained value, plus a few scalar counters.
    assert distill.count_params(state.opt_state) < 2 * param_count + 16
    assert teacher_count > param_count - distill.count_params(params["objective"])
    assert "teacher_params" not in state.checkpoint_items()


@pytest.mark.slow
def test_cached_teacher_matches_fused(teacher, sst2):
    """Twenty steps with precomputed teacher outputs train the same student as the fused step."""
    teacher_model, teacher_params = teacher
    transfer, label_mask = sst2
    objective = build_objective(_distill_config(hidden_mse=1.0, attention_kl=1.0))
    student, params = _student(teacher_model, teacher_params, _layer_student(), objective)
    mesh = make_mesh(2)
    train_config = common.get_base_config().train
    train_config.length_buckets = BUCKETS
    # One eval batch of all 64 rows runs the teacher at width 64 only, while most train
    # batches are 32 tokens wide, so the cache must be cut to each batch's width.
    train_config.eval_batch_size = 64
    settings = TrainSettings.from_config(train_config, len(transfer), mesh)
    assert len(transfer) == train_config.eval_batch_size
    cache = distill.teacher_cache(
        teacher_model, teacher_params, transfer, objective, settings, mesh
    )
    assert {"teacher_logits", "teacher_hidden_states_2", "teacher_attentions_1"} <= set(cache)

    num_steps = 20
    loss_fn = distill.distillation_loss(student, teacher_model, objective)
    runs = {}
    for name, per_example in (
        ("fused", {"label_mask": label_mask}),
        ("cached", {"label_mask": label_mask, **cache}),
    ):
        optimizer, _ = make_optimizer(
            common.get_base_config().optimizer, params, num_steps, num_layers=1
        )
        state = create_train_state(
            params, optimizer, seed=SEED, mesh=mesh, teacher_params=teacher_params
        )
        train_step = make_train_step(loss_fn, optimizer, state, mesh)
        losses, widths, epoch = [], set(), 0
        while len(losses) < num_steps:
            for batch in _epoch(transfer, per_example, epoch, 2):
                if len(losses) == num_steps:
                    break
                widths.add(batch["input_ids"].shape[1])
                state, metrics = train_step(state, batch)
                losses.append(float(metrics["loss"]))
            epoch += 1
        runs[name] = (np.array(losses), host_copy(state.params["student"]), widths)

    fused_losses, fused_params, widths = runs["fused"]
    cached_losses, cached_params, _ = runs["cached"]
    assert widths == set(BUCKETS), "both length buckets should occur in training"
    initial = jax.tree.leaves(params["student"])
    assert any(
        not np.allclose(old, new, atol=1e-4)
        for old, new in zip(initial, jax.tree.leaves(fused_params))
    ), "the student should move further than the tolerance below"
    # The cache ran the teacher at eval-batch lengths, so only float rounding may differ.
    np.testing.assert_allclose(cached_losses, fused_losses, rtol=1e-5, atol=1e-6)
    for path, fused in jax.tree_util.tree_leaves_with_path(fused_params):
        cached = cached_params
        for entry in path:
            cached = cached[entry.key]
        np.testing.assert_allclose(
            cached, fused, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path)
        )
