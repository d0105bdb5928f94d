"""The real fine-tune pipeline on a 1-layer MiniLM teacher: determinism, resume, errors.

Every run trains layer 0 of all-MiniLM-L6-v2 on the SST-2 16-shot split of seed 13
(see train_jobs.small_config) and evaluates the full SST-2 test split. The runs share
one persistent XLA compilation cache, so only the first run of each shape compiles.
"""

import json
import re
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import transformers
from safetensors.torch import load_file
from train_jobs import DEFAULT_RECIPE, REPO_ROOT, TIMING_METRICS, seed_metrics, small_config

from sklearn.linear_model import LogisticRegression

from fsl_jax import data as data_lib
from fsl_jax import pipeline
from fsl_jax.checkpoints import load_encoder
from fsl_jax.evaluate import outputs
from fsl_jax.models import select_layers
from fsl_jax.train import finetune, heads
from fsl_jax.train.loop import NonFiniteLossError
from fsl_jax.train.mesh import make_mesh

SEED = 13
# Eight steps with an eval every two. The killed run stops after step 4, one step
# past its last periodic checkpoint, so the resumed run replays step 4 and its eval.
BASE = {"num_devices": 2, "train.num_steps": 8, "train.eval_every": 2}
RESUME = {"train.checkpoint_every": 3}


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """Yield a persistent XLA cache folder for this module's runs, then restore the settings."""
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    previous = {name: getattr(jax.config, name) for name in names}
    yield str(tmp_path_factory.mktemp("xla_cache"))
    for name, value in previous.items():
        jax.config.update(name, value)


def _run(workdir, compilation_cache, **overrides):
    config = small_config({**BASE, "compilation_cache_dir": compilation_cache, **overrides})
    return pipeline.run(config, workdir)


def _test_logits(workdir):
    with np.load(outputs.predictions_path(workdir, "teacher", SEED)) as arrays:
        return arrays["logits"]


def _train_losses(workdir):
    """Return {step: train_loss}. A replayed step keeps the value of its last run."""
    return {
        record["step"]: record["train_loss"]
        for record in outputs.read_metrics(workdir)
        if "train_loss" in record
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compilation_cache):
    """An uninterrupted run without periodic checkpoints: (workdir, results)."""
    workdir = tmp_path_factory.mktemp("reference")
    return workdir, _run(workdir, compilation_cache)


@pytest.mark.slow
def test_same_seed_gives_identical_results(reference, tmp_path, compilation_cache):
    reference_dir, reference_results = reference
    results = _run(tmp_path, compilation_cache)

    assert seed_metrics(results) == seed_metrics(reference_results)
    written = json.loads((tmp_path / outputs.RESULTS_JSON).read_text())
    assert seed_metrics(written) == seed_metrics(results)
    assert set(seed_metrics(results)["teacher"]) >= {"dev_accuracy", "test_accuracy"}
    assert not set(TIMING_METRICS) & set(seed_metrics(results)["teacher"])
    np.testing.assert_array_equal(_test_logits(tmp_path), _test_logits(reference_dir))
    assert _train_losses(tmp_path) == _train_losses(reference_dir)
    assert len(_train_losses(tmp_path)) == BASE["train.num_steps"] // 2


@pytest.mark.slow
def test_resume_after_stop_matches_uninterrupted(reference, tmp_path, compilation_cache):
    reference_dir, reference_results = reference
    stopped = _run(tmp_path, compilation_cache, **RESUME, **{"train.stop_after": 4})
    assert stopped is None
    assert not (tmp_path / outputs.RESULTS_JSON).exists()
    periodic = tmp_path / "checkpoints" / f"seed_{SEED}" / "teacher" / "periodic"
    assert ocp.CheckpointManager(periodic).all_steps() == [3]

    results = _run(tmp_path, compilation_cache, **RESUME)
    assert seed_metrics(results) == seed_metrics(reference_results)
    np.testing.assert_array_equal(_test_logits(tmp_path), _test_logits(reference_dir))
    assert _train_losses(tmp_path) == _train_losses(reference_dir)


@pytest.mark.slow
def test_packed_fine_tune_resumes_exactly(tmp_path, compilation_cache):
    """train.pack: a killed and resumed run ends where an uninterrupted one does."""
    packed = {"train.pack": True}
    uninterrupted = _run(tmp_path / "uninterrupted", compilation_cache, **packed)
    assert _train_losses(tmp_path / "uninterrupted").keys() == {2, 4, 6, 8}

    resumed_dir = tmp_path / "resumed"
    stopped = _run(resumed_dir, compilation_cache, **packed, **RESUME, **{"train.stop_after": 4})
    assert stopped is None
    results = _run(resumed_dir, compilation_cache, **packed, **RESUME)
    assert seed_metrics(results) == seed_metrics(uninterrupted)
    np.testing.assert_array_equal(
        _test_logits(resumed_dir), _test_logits(tmp_path / "uninterrupted")
    )
    assert _train_losses(resumed_dir) == _train_losses(tmp_path / "uninterrupted")


@pytest.mark.slow
def test_resume_on_fewer_devices(reference, tmp_path, compilation_cache):
    """Checkpoints written on 8 devices restore onto 1, and the run finishes as usual."""
    reference_dir, reference_results = reference
    stopped = _run(tmp_path, compilation_cache, num_devices=8, **RESUME, **{"train.stop_after": 4})
    assert stopped is None
    results = _run(tmp_path, compilation_cache, num_devices=1, **RESUME)

    metrics = seed_metrics(results)["teacher"]
    expected = seed_metrics(reference_results)["teacher"]
    # Only float rounding differs between device counts, so at most a few of the 872
    # test rows may change their predicted class.
    assert abs(metrics["test_accuracy"] - expected["test_accuracy"]) <= 3 / 872
    assert abs(metrics["dev_accuracy"] - expected["dev_accuracy"]) <= 1 / 32
    np.testing.assert_allclose(
        _test_logits(tmp_path), _test_logits(reference_dir), rtol=1e-3, atol=1e-3
    )
    resumed_losses = _train_losses(tmp_path)
    reference_losses = _train_losses(reference_dir)
    assert resumed_losses.keys() == reference_losses.keys()
    for step, loss in reference_losses.items():
        np.testing.assert_allclose(resumed_losses[step], loss, rtol=1e-4, err_msg=f"step {step}")


@pytest.mark.slow
def test_huge_learning_rate_stops_at_nan(tmp_path, compilation_cache):
    """A NaN loss names its step, and the checkpoint before it stays restorable."""
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step \d+") as raised:
        _run(
            tmp_path,
            compilation_cache,
            **{"optimizer.learning_rate": 1e30, "train.checkpoint_every": 1},
        )
    bad_step = int(re.search(r"at step (\d+)", str(raised.value)).group(1))
    assert not (tmp_path / outputs.RESULTS_JSON).exists()

    periodic = tmp_path / "checkpoints" / f"seed_{SEED}" / "teacher" / "periodic"
    manager = ocp.CheckpointManager(periodic)
    assert manager.latest_step() == bad_step
    restored = manager.restore(
        bad_step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(), loop=ocp.args.JsonRestore()),
    )
    assert int(restored["state"]["step"]) == bad_step
    for value in jax.tree.leaves(restored["state"]["params"]):
        assert np.all(np.isfinite(np.asarray(value)))
    manager.close()


@pytest.mark.slow
def test_contrastive_stage_runs_before_fine_tune_and_repeats(tmp_path, compilation_cache):
    """With the pair stage on, two fresh runs of one seed give identical results."""
    pairs = {"contrastive.enabled": True}
    first = _run(tmp_path / "first", compilation_cache, **pairs)
    second = _run(tmp_path / "second", compilation_cache, **pairs)
    assert seed_metrics(first) == seed_metrics(second)
    np.testing.assert_array_equal(
        _test_logits(tmp_path / "first"), _test_logits(tmp_path / "second")
    )

    records = outputs.read_metrics(tmp_path / "first")
    pair_losses = [
        r["train_loss"] for r in records if r["model"] == "contrastive" and "train_loss" in r
    ]
    # SST-2 seed 13, the default pairs='in_batch': 32 examples, one step of 32 per epoch,
    # 10 epochs, the loss logged every 10 steps.
    assert len(pair_losses) == 1
    assert np.isfinite(pair_losses[0])
    assert [r["step"] for r in records if r["model"] == "contrastive" and "dev_accuracy" in r] == [
        10
    ]
    teacher_steps = [r["step"] for r in records if r["model"] == "teacher" and "train_loss" in r]
    assert teacher_steps == [2, 4, 6, 8]


@pytest.fixture(scope="module")
def logistic_teacher(tmp_path_factory, compilation_cache):
    """A run of the default recipe: (workdir, results)."""
    workdir = tmp_path_factory.mktemp("logistic_teacher")
    return workdir, _run(workdir, compilation_cache, **DEFAULT_RECIPE)


@pytest.mark.slow
def test_logistic_teacher_without_fine_tune(logistic_teacher, tmp_path, minilm_dir):
    """train.enabled=False: the teacher is the stage's encoder with a logistic head."""
    workdir, results = logistic_teacher
    overrides = DEFAULT_RECIPE
    teacher = seed_metrics(results)["teacher"]
    assert teacher["best_step"] == 0
    records = [r for r in outputs.read_metrics(workdir) if r["model"] == "teacher"]
    assert not [r for r in records if "train_loss" in r]
    assert [r["step"] for r in records if "dev_accuracy" in r] == [0]

    # The best checkpoint is what a distillation run reuses as its teacher.
    best = ocp.CheckpointManager(workdir / "checkpoints" / f"seed_{SEED}" / "teacher" / "best")
    restored = best.restore(
        0, args=ocp.args.Composite(params=ocp.args.StandardRestore(), record=ocp.args.JsonRestore())
    )
    best.close()
    assert restored["record"]["accuracy"] == teacher["dev_accuracy"]

    # Its test probabilities are scikit-learn's logistic regression (C=1) fitted on the
    # stage encoder's pooled train vectors.
    config = small_config(overrides)
    encoder_config, encoder_params = load_encoder(minilm_dir)
    encoder_config, _ = select_layers(encoder_params, encoder_config, [0])
    model = finetune.build_classifier(config.model, encoder_config, 2)
    tokenizer = data_lib.Tokenizer.from_pretrained(minilm_dir)
    encoded, _, _ = pipeline.load_seed_data(config, SEED, tokenizer, tmp_path / "check")
    params = jax.tree.map(np.asarray, restored["params"])  # Saved from 2 devices; read on 1.
    pooled = {
        name: heads.pooled_features(model, params, encoded[name], make_mesh(1), 64, (32,))
        for name in ("train", "test")
    }
    reference = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10)
    reference.fit(pooled["train"], encoded["train"].labels)
    logits = _test_logits(workdir)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, reference.predict_proba(pooled["test"]), atol=2e-3)


def _pytorch_logits(directory, texts, max_length):
    """Return the logits of an exported model directory computed with PyTorch.

    transformers' AutoModel and the exported tokenizer give the hidden states; the
    exported head (classifier.weight/bias) is applied to their normalised mean.
    """
    config = json.loads((directory / "config.json").read_text())
    model = transformers.AutoModel.from_pretrained(str(directory)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    inputs = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    assert config["fsl_jax_pooling"] == "mean"
    assert config["fsl_jax_normalize"]
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    tensors = load_file(str(directory / "model.safetensors"))
    logits = pooled @ tensors["classifier.weight"].T + tensors["classifier.bias"]
    return (logits * config["fsl_jax_head_scale"]).numpy()


@pytest.mark.slow
def test_distill_job_reuses_logistic_teacher(
    logistic_teacher, tmp_path, compilation_cache, minilm_dir
):
    """A distillation run on the default teacher: the student trains, the teacher is reused.

    Both are also exported, and PyTorch reproduces their test logits from the exports.
    """
    teacher_dir, teacher_results = logistic_teacher
    overrides = {
        **DEFAULT_RECIPE,
        "export_hf": True,
        "distill.enabled": True,
        "distill.teacher_workdir": str(teacher_dir),
        "distill.student.num_layers": 1,
        "distill.train.num_steps": 4,
        "distill.train.eval_every": 2,
    }
    results = _run(tmp_path, compilation_cache, **overrides)
    metrics = seed_metrics(results)
    assert metrics["teacher"] == seed_metrics(teacher_results)["teacher"]
    student = metrics["student"]
    assert student["best_step"] in (2, 4)
    assert 0.0 <= student["test_accuracy"] <= 1.0
    # The test teacher has one layer, so the 1-layer student has its size.
    assert student["num_params"] == metrics["teacher"]["num_params"]

    records = outputs.read_metrics(tmp_path)
    # Reused, so no teacher or pair-stage training here; the student logs steps 2 and 4.
    assert {r["model"] for r in records} == {"student"}
    assert [r["step"] for r in records if "train_loss" in r] == [2, 4]
    with np.load(outputs.predictions_path(tmp_path, "student", SEED)) as arrays:
        assert arrays["logits"].shape == (872, 2)

    config = small_config(overrides)
    tokenizer = data_lib.Tokenizer.from_pretrained(minilm_dir)
    _, _, cleaned = pipeline.load_seed_data(config, SEED, tokenizer, tmp_path / "check")
    texts = [example.text for example in cleaned["test"].examples[:16]]
    for name in ("teacher", "student"):
        with np.load(outputs.predictions_path(tmp_path, name, SEED)) as arrays:
            logits = arrays["logits"][:16]
        exported = _pytorch_logits(
            tmp_path / "export" / f"{name}_seed{SEED}", texts, config.max_length
        )
        np.testing.assert_allclose(exported, logits, atol=2e-3, err_msg=name)


@pytest.mark.parametrize(
    "override, misspelt, suggestion",
    [
        ("--config.optimizer.lerning_rate=1", "lerning_rate", "learning_rate"),
        ("--config.optimzer.learning_rate=1", "optimzer", "optimizer"),
    ],
)
def test_misspelt_override_fails_naming_key(tmp_path, override, misspelt, suggestion):
    workdir = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable,
            "run.py",
            "--config=configs/sst2_finetune.py",
            f"--workdir={workdir}",
            override,
        ],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert misspelt in completed.stderr
    assert f'Did you mean "{suggestion}"' in completed.stderr
    assert not workdir.exists()
