"""Pipeline pieces: ablation overrides, augmentation in the step, transfer sets, config checks."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fsl_jax import augment
from fsl_jax import data as data_lib
from fsl_jax import pipeline
from fsl_jax.ablation import apply_overrides, parse_overrides
from fsl_jax.models import Classifier, EncoderConfig
from fsl_jax.train import augmentation, distill, finetune
from fsl_jax.train.mesh import make_mesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import sst2_finetune  # noqa: E402

TINY = EncoderConfig(
    vocab_size=120,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
)


def test_parse_overrides_types_values():
    parsed = parse_overrides("distill.terms.ce.weight=0.5, distill.temperature=4,model.pooling=cls")
    assert parsed == [
        ("distill.terms.ce.weight", 0.5),
        ("distill.temperature", 4),
        ("model.pooling", "cls"),
    ]


def test_parse_overrides_rejects_missing_equals():
    with pytest.raises(ValueError, match="expected key=value"):
        parse_overrides("distill.terms.ce.weight")


def test_apply_overrides_unknown_key_names_it():
    config = sst2_finetune.get_config()
    with pytest.raises(KeyError, match="lerning_rate"):
        apply_overrides(config, [("optimizer.lerning_rate", 1.0)])


def test_apply_overrides_keeps_float_type():
    config = sst2_finetune.get_config()
    changed = apply_overrides(config, [("distill.temperature", 4)])
    assert changed.distill.temperature == 4.0
    assert isinstance(changed.distill.temperature, float)
    assert config.distill.temperature == 2.0


@pytest.fixture(scope="module")
def sst2_seed13(data_dir, minilm_dir):
    tokenizer = data_lib.Tokenizer.from_pretrained(minilm_dir)
    splits, vocab = data_lib.load_task("sst2", seed=13, k=16, data_dir=data_dir)
    train = data_lib.encode_split(tokenizer, splits["train"], 32, vocab)
    return tokenizer, train, vocab


def _tiny_batch():
    ids = np.array(
        [[101, 7, 8, 9, 102, 0], [101, 11, 12, 102, 0, 0], [101, 5, 102, 0, 0, 0], [0] * 6],
        np.int32,
    )
    return {
        "input_ids": ids,
        "attention_mask": (ids > 0).astype(np.int32),
        "token_type_ids": np.zeros_like(ids),
        "labels": np.array([0, 1, 0, 0], np.int32),
        "example_mask": np.array([1, 1, 1, 0], np.float32),
        "example_index": np.array([0, 1, 2, -1], np.int32),
    }


def test_augment_inputs_cutoff_and_mixup_under_jit():
    model = Classifier(TINY, num_labels=2, pooling="mean")
    batch = _tiny_batch()
    params = model.init(jax.random.key(0), batch["input_ids"], batch["attention_mask"])["params"]
    policy = augment.AugmentPolicy(ops="token_cutoff=0.5,mixup=0.4")
    token_ids = augmentation.TokenIds(special=(0, 101, 102), mask=103 % 120, vocab_size=120)

    @jax.jit
    def run(params, batch, key):
        return augmentation.augment_inputs(model, params, batch, key, policy, token_ids, 2)

    inputs, loss_batch, mixing = run(params, batch, jax.random.key(1))
    special = np.isin(batch["input_ids"], (0, 101, 102))
    np.testing.assert_array_equal(
        np.asarray(inputs["input_ids"])[special], batch["input_ids"][special]
    )
    soft = np.asarray(loss_batch["soft_labels"])
    np.testing.assert_allclose(soft[:3].sum(axis=1), 1.0, atol=1e-6)
    assert inputs["inputs_embeds"].shape == (4, 6, TINY.hidden_size)
    assert mixing is not None


def test_teacher_sees_student_mixed_inputs():
    model = Classifier(TINY, num_labels=2, pooling="mean")
    batch = _tiny_batch()
    params = model.init(jax.random.key(0), batch["input_ids"], batch["attention_mask"])["params"]
    policy = augment.AugmentPolicy(ops="mixup=0.4")
    token_ids = augmentation.TokenIds(special=(0, 101, 102), mask=None, vocab_size=120)
    inputs, _, mixing = augmentation.augment_inputs(
        model, params, batch, jax.random.key(2), policy, token_ids, 2
    )
    # With the teacher equal to the student, it must receive exactly the same embeddings.
    teacher_in = augmentation.teacher_inputs(model, params, inputs, mixing)
    np.testing.assert_allclose(teacher_in["inputs_embeds"], inputs["inputs_embeds"], atol=1e-6)


def test_classification_loss_with_device_ops_is_finite():
    model = Classifier(TINY, num_labels=2, pooling="mean")
    batch = _tiny_batch()
    params = model.init(jax.random.key(0), batch["input_ids"], batch["attention_mask"])["params"]
    policy = augment.AugmentPolicy(ops="span_cutoff=0.3,mixup=0.4")
    token_ids = augmentation.TokenIds(special=(0, 101, 102), mask=3, vocab_size=120)
    loss_fn = finetune.classification_loss(model, policy, token_ids)
    grad_fn = jax.jit(jax.grad(lambda p: loss_fn(p, None, batch, jax.random.key(4), 0)[0]))
    grads = grad_fn(params)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(grads))


def test_transfer_set_masks_pool_labels(sst2_seed13):
    tokenizer, train, _ = sst2_seed13
    pool_split = data_lib.Split(
        name="pool",
        examples=[
            data_lib.Example(text="an unlabelled sentence"),
            data_lib.Example(text="another"),
        ],
    )
    pool = data_lib.encode_split(tokenizer, pool_split, 16)
    joined, label_mask = distill.concat_transfer_sets(train, pool)
    assert len(joined) == len(train) + 2
    np.testing.assert_array_equal(label_mask, [1.0] * len(train) + [0.0, 0.0])
    assert joined.max_length == 32


def test_add_per_example_gathers_and_cuts_tokens():
    batch = _tiny_batch()
    hidden = np.arange(3 * 8 * 2, dtype=np.float32).reshape(3, 8, 2)
    out = next(distill.add_per_example(iter([batch]), {"teacher_hidden_states_0": hidden}))
    values = out["teacher_hidden_states_0"]
    assert values.shape == (4, 6, 2)
    np.testing.assert_array_equal(values[:3], hidden[:, :6])
    assert np.all(values[3] == 0)


def test_missing_teacher_workdir_explains_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the fine-tune config there first"):
        pipeline.load_finished_teacher(tmp_path, 13, {}, make_mesh(1))


def test_cached_teacher_rejects_device_augmentation():
    model = Classifier(TINY, num_labels=2, pooling="mean")
    batch = _tiny_batch()
    params = model.init(jax.random.key(0), batch["input_ids"], batch["attention_mask"])["params"]
    from fsl_jax.losses import build_objective

    objective = build_objective({"terms": {"kd": {"weight": 1.0}}, "temperature": 2.0})
    policy = augment.AugmentPolicy(ops="token_cutoff=0.2")
    token_ids = augmentation.TokenIds(special=(0, 101, 102), mask=3, vocab_size=120)
    loss_fn = distill.distillation_loss(model, model, objective, policy, token_ids)
    cached = {**batch, "teacher_logits": jnp.zeros((4, 2))}
    with pytest.raises(ValueError, match="cache_teacher=False"):
        loss_fn({"student": params, "objective": {}}, params, cached, jax.random.key(0), 0)


def test_workdir_rejects_changed_config(tmp_path):
    config = sst2_finetune.get_config()
    pipeline.check_workdir_config(config, tmp_path)
    resumed = sst2_finetune.get_config()
    resumed.train.stop_after = 7  # resumable: does not change results
    pipeline.check_workdir_config(resumed, tmp_path)
    changed = sst2_finetune.get_config()
    changed.optimizer.learning_rate = 1e-3
    with pytest.raises(ValueError, match="optimizer"):
        pipeline.check_workdir_config(changed, tmp_path)
    without_pairs = sst2_finetune.get_config()
    without_pairs.contrastive.enabled = False
    with pytest.raises(ValueError, match="contrastive"):
        pipeline.check_workdir_config(without_pairs, tmp_path)


def test_run_rejects_empty_seeds(tmp_path):
    config = sst2_finetune.get_config()
    config.seeds = ()
    with pytest.raises(ValueError, match=r"config.seeds is empty.*--config.seeds='\(13,\)'"):
        pipeline.run(config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_run_rejects_pooler_with_packing(tmp_path):
    config = sst2_finetune.get_config()
    config.model.pooling = "pooler"
    with pytest.raises(
        ValueError,
        match=r"contrastive.pack and train.pack_eval .* --config.contrastive.pack=False "
        r"--config.train.pack_eval=False",
    ):
        pipeline.run(config, tmp_path)
    assert not any(tmp_path.iterdir())
    config.train.pack_eval = False
    with pytest.raises(ValueError, match=r"but contrastive.pack pack"):
        pipeline.check_packing(config)
    config.contrastive.pack = False
    pipeline.check_packing(config)
    config.model.pooling = "cls"
    config.train.pack_eval = True
    config.contrastive.pack = True
    pipeline.check_packing(config)


def test_check_packing_rejects_train_pack():
    config = sst2_finetune.get_config()
    config.train.enabled = True
    config.train.pack = True
    pipeline.check_packing(config)
    config.augment.ops = "random_deletion=0.1,token_cutoff=0.1"
    with pytest.raises(ValueError, match=r"device operations \['token_cutoff'\]"):
        pipeline.check_packing(config)
    # Without the fine-tune there are no train batches to pack.
    config.train.enabled = False
    pipeline.check_packing(config)
    config.train.enabled = True
    config.augment.ops = "random_deletion=0.1"
    config.model.pooling = "pooler"
    config.contrastive.pack = False
    config.train.pack_eval = False
    with pytest.raises(ValueError, match=r"but train.pack pack .* --config.train.pack=False"):
        pipeline.check_packing(config)


def test_legacy_config_still_matches(tmp_path):
    """A config.json written before train.enabled, train.pack_eval, train.pack,
    model.logistic_c and two contrastive keys."""
    from configs import sst2_distill

    teacher = sst2_finetune.get_config()
    teacher.train.enabled = True
    teacher.model.head_init = "prototypes"
    teacher.contrastive.pack = False
    teacher.train.pack_eval = False
    recorded = pipeline._result_defining(teacher)
    del recorded["train"]["enabled"], recorded["train"]["pack_eval"], recorded["train"]["pack"]
    del recorded["model"]["logistic_c"]
    del recorded["contrastive"]["ce_weight"], recorded["contrastive"]["pack"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))

    # Those runs fine-tuned the classifier, as sst2_distill's teacher does.
    pipeline.check_teacher_config(sst2_distill.get_config(), tmp_path)
    pipeline.check_workdir_config(teacher, tmp_path)
    # The default recipe (no fine-tune) is another run.
    with pytest.raises(ValueError, match=r"sections \['contrastive', 'model', 'train'\] differ"):
        pipeline.check_workdir_config(sst2_finetune.get_config(), tmp_path)


def test_reused_teacher_must_match_config(tmp_path):
    from configs import sst2_distill

    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    augmented_dir = tmp_path / "augmented_teacher"
    augmented_dir.mkdir()

    def fine_tuned_teacher():
        """sst2_finetune with the classifier fine-tune that sst2_distill's teacher has."""
        config = sst2_finetune.get_config()
        config.train.enabled = True
        config.model.head_init = "prototypes"
        config.contrastive.pack = False
        config.train.pack_eval = False
        return config

    pipeline.check_workdir_config(fine_tuned_teacher(), augmented_dir)
    # sst2_distill keeps the teacher's deletion copies out of its transfer set, which
    # leaves the teacher as sst2_finetune trains it.
    assert sst2_finetune.get_config().augment.ops
    pipeline.check_teacher_config(sst2_distill.get_config(), augmented_dir)
    # The default sst2_finetune run (a logistic head, no fine-tune) is another teacher.
    logistic_dir = tmp_path / "logistic_teacher"
    logistic_dir.mkdir()
    pipeline.check_workdir_config(sst2_finetune.get_config(), logistic_dir)
    with pytest.raises(ValueError, match=r"sections \['contrastive', 'model', 'train'\]"):
        pipeline.check_teacher_config(sst2_distill.get_config(), logistic_dir)

    teacher = fine_tuned_teacher()
    teacher.contrastive.enabled = False
    teacher.augment.ops = ""
    pipeline.check_workdir_config(teacher, teacher_dir)

    student = sst2_distill.get_config()
    student.contrastive.enabled = False
    student.augment.ops = ""
    student.distill.terms.hidden_mse.weight = 1.0  # distill settings may differ
    pipeline.check_teacher_config(student, teacher_dir)
    # Augmented copies for the transfer set only leave the teacher as it was.
    student.augment.ops = "random_swap=0.1"
    student.augment.copies_per_example = 2
    student.augment.for_finetuning = False
    pipeline.check_teacher_config(student, teacher_dir)
    student.augment.for_finetuning = True
    with pytest.raises(ValueError, match=r"sections \['augment'\]"):
        pipeline.check_teacher_config(student, teacher_dir)
    student.augment.for_finetuning = False
    student.contrastive.enabled = True
    with pytest.raises(ValueError, match=r"other settings \(sections \['contrastive'\]"):
        pipeline.check_teacher_config(student, teacher_dir)
    pipeline.check_teacher_config(student, tmp_path / "older_run_without_config_json")
