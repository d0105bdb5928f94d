"""Tests for the ablation report over loss variants."""

import json

import numpy as np
import pytest

from fsl_jax.evaluate import ablation_report, aggregate, metrics, outputs
from fsl_jax.evaluate.outputs import SeedPredictions

SEEDS = [13, 21, 42, 87, 100]
NUM_EXAMPLES = 500


def simulate_variant(labels, accuracy, generator):
    runs = {}
    for seed in SEEDS:
        correct = generator.random(labels.shape) < accuracy
        runs[seed] = SeedPredictions(np.where(correct, labels, 1 - labels), labels)
    return runs


@pytest.fixture
def variants():
    generator = np.random.default_rng(0)
    labels = generator.integers(0, 2, size=NUM_EXAMPLES)
    return {
        "kd": simulate_variant(labels, 0.80, generator),
        "kd_hidden_mse": simulate_variant(labels, 0.88, generator),
        "kd_no_temperature": simulate_variant(labels, 0.80, generator),
    }


def write_run(workdir, runs, model="student"):
    """Write results.json and predictions for one variant with the public writers."""
    per_seed = {}
    for seed, (predictions, labels) in runs.items():
        outputs.write_predictions(workdir, model, seed, predictions, labels)
        per_seed[seed] = {
            "dev_accuracy": 0.9,
            "test_accuracy": metrics.accuracy(predictions, labels),
            "test_macro_f1": metrics.macro_f1(predictions, labels),
        }
    aggregate.write_results(workdir, aggregate.build_results({model: per_seed}, repo_dir=None))


def test_build_ablation_summaries(variants):
    ablation = ablation_report.build_ablation(
        variants, "kd", model="student", num_resamples=500, seed=0
    )

    assert list(ablation["variants"]) == ["kd", "kd_hidden_mse", "kd_no_temperature"]
    assert ablation["seeds"] == SEEDS
    assert ablation["baseline"] == "kd"
    assert ablation["variants"]["kd"]["comparison"] is None
    for name, runs in variants.items():
        per_seed = [np.mean(runs[seed].predictions == runs[seed].labels) for seed in SEEDS]
        summary = ablation["variants"][name]["test_accuracy"]
        assert summary["mean"] == pytest.approx(np.mean(per_seed))
        assert summary["std"] == pytest.approx(np.std(per_seed))


def test_build_ablation_comparisons(variants):
    ablation = ablation_report.build_ablation(variants, "kd", num_resamples=2000, seed=0)

    better = ablation["variants"]["kd_hidden_mse"]["comparison"]
    same = ablation["variants"]["kd_no_temperature"]["comparison"]
    baseline_mean = ablation["variants"]["kd"]["test_accuracy"]["mean"]
    better_mean = ablation["variants"]["kd_hidden_mse"]["test_accuracy"]["mean"]
    assert better["difference"] == pytest.approx(better_mean - baseline_mean)
    assert better["ci_low"] > 0
    assert better["p_value"] < 0.01
    assert same["ci_low"] < same["difference"] < same["ci_high"]
    assert same["num_resamples"] == 2000


def test_build_ablation_rejects_unknown_baseline(variants):
    with pytest.raises(ValueError, match="Baseline 'ce' is not among the variants"):
        ablation_report.build_ablation(variants, "ce")


def test_build_ablation_rejects_invalid_variant_name(variants):
    variants["kd hidden"] = variants.pop("kd_hidden_mse")

    with pytest.raises(ValueError, match="Invalid variant name 'kd hidden'"):
        ablation_report.build_ablation(variants, "kd")


def test_write_ablation_report_files(tmp_path, variants):
    ablation = ablation_report.build_ablation(variants, "kd", model="student", num_resamples=500)

    json_path, markdown_path, png_path = ablation_report.write_ablation_report(tmp_path, ablation)

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_path.stat().st_size > 5_000
    stored = json.loads(json_path.read_text())
    assert stored["variants"]["kd_hidden_mse"]["comparison"]["p_value"] == pytest.approx(
        ablation["variants"]["kd_hidden_mse"]["comparison"]["p_value"]
    )
    assert stored["variants"]["kd"]["comparison"] is None

    text = markdown_path.read_text()
    for name in variants:
        summary = ablation["variants"][name]["test_accuracy"]
        mean_std = f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"
        row = next(line for line in text.splitlines() if line.startswith(f"| {name}"))
        assert mean_std in row
    better = ablation["variants"]["kd_hidden_mse"]["comparison"]
    better_row = next(line for line in text.splitlines() if line.startswith("| kd_hidden_mse"))
    assert f"{100 * better['difference']:+.1f}" in better_row
    assert f"[{100 * better['ci_low']:+.1f}, {100 * better['ci_high']:+.1f}]" in better_row
    assert "| kd (baseline) |" in text
    assert "95% CI" in text


def test_ablation_from_workdirs(tmp_path, variants):
    for name, runs in variants.items():
        write_run(tmp_path / name, runs)
    (tmp_path / "notes").mkdir()

    variant_dirs = ablation_report.discover_variant_dirs(tmp_path)
    from_disk = ablation_report.ablation_from_workdirs(
        variant_dirs, "kd", num_resamples=300, seed=1
    )
    in_memory = ablation_report.build_ablation(
        variants, "kd", model="student", num_resamples=300, seed=1
    )

    assert list(variant_dirs) == sorted(variants)
    for name in variants:
        assert (
            from_disk["variants"][name]["test_accuracy"]
            == in_memory["variants"][name]["test_accuracy"]
        )
        assert (
            from_disk["variants"][name]["comparison"] == in_memory["variants"][name]["comparison"]
        )


def test_load_variant_predictions_detects_mismatch(tmp_path, variants):
    write_run(tmp_path, variants["kd"])
    other = variants["kd_hidden_mse"][21]
    outputs.write_predictions(tmp_path, "student", 21, other.predictions, other.labels)

    with pytest.raises(ValueError, match="student_seed21.npz gives test accuracy"):
        ablation_report.load_variant_predictions(tmp_path, "student")


def test_load_variant_predictions_unknown_model(tmp_path, variants):
    write_run(tmp_path, variants["kd"])

    with pytest.raises(ValueError, match=r"Model 'teacher' not found.*\['student'\]"):
        ablation_report.load_variant_predictions(tmp_path, "teacher")
