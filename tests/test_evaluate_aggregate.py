"""Tests for multi-seed aggregation, results.json and results.md."""

import datetime
import json
import math
import statistics
import subprocess

import numpy as np
import pytest

from fsl_jax.evaluate import aggregate, outputs, report

SEEDS = [13, 21, 42, 87, 100]


def per_seed_metrics():
    generator = np.random.default_rng(11)
    return {
        model: {
            seed: {
                "dev_accuracy": float(generator.uniform(0.7, 0.95)),
                "test_accuracy": float(generator.uniform(0.7, 0.95)),
                "test_macro_f1": float(generator.uniform(0.7, 0.95)),
            }
            for seed in SEEDS
        }
        for model in ("teacher", "student")
    }


def test_summarize_seeds_statistics():
    values = {21: 0.8, 13: 0.9, 100: 0.85, 42: 0.7, 87: 0.75}
    summary = aggregate.summarize_seeds(values)

    ordered = [values[seed] for seed in sorted(values)]
    assert summary["mean"] == pytest.approx(statistics.fmean(ordered))
    assert summary["std"] == pytest.approx(statistics.pstdev(ordered))
    assert summary["sample_std"] == pytest.approx(statistics.stdev(ordered))
    assert summary["num_seeds"] == 5
    assert list(summary["per_seed"]) == ["13", "21", "42", "87", "100"]
    assert summary["per_seed"]["42"] == 0.7


def test_summarize_seeds_single_seed():
    summary = aggregate.summarize_seeds({13: 0.5})

    assert summary["mean"] == 0.5
    assert summary["std"] == 0.0
    assert summary["sample_std"] is None


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "empty"),
        ({13: math.nan}, "seed 13 is not finite"),
        ({13: "0.9"}, "seed 13 must be a number"),
        ({13: True}, "seed 13 must be a number"),
    ],
)
def test_summarize_seeds_rejects_values(values, message):
    with pytest.raises(ValueError, match=message):
        aggregate.summarize_seeds(values)


def test_build_results_structure():
    metrics_by_model = per_seed_metrics()
    created = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    results = aggregate.build_results(
        metrics_by_model, config={"learning_rate": 1e-5, "k_shot": 16}, created=created
    )

    assert results["seeds"] == SEEDS
    assert results["std_ddof"] == 0
    assert results["config"] == {"learning_rate": 1e-5, "k_shot": 16}
    assert results["created"] == "2024-05-01T12:00:00+00:00"
    assert set(results["models"]) == {"teacher", "student"}
    for model, runs in metrics_by_model.items():
        for metric in ("dev_accuracy", "test_accuracy", "test_macro_f1"):
            values = [runs[seed][metric] for seed in SEEDS]
            entry = results["models"][model][metric]
            assert entry["mean"] == pytest.approx(np.mean(values))
            assert entry["std"] == pytest.approx(np.std(values))
            assert entry["per_seed"] == {str(seed): runs[seed][metric] for seed in SEEDS}


def test_build_results_records_versions():
    results = aggregate.build_results(per_seed_metrics())
    versions = results["versions"]

    assert set(versions) == {"python"} | set(aggregate.VERSIONED_PACKAGES)
    assert versions["numpy"] == np.__version__
    assert versions["python"].count(".") == 2


def test_build_results_accepts_config_dict():
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict({"model": {"name": "bert"}, "seeds": (13, 21)})

    results = aggregate.build_results(per_seed_metrics(), config=config)

    assert results["config"] == {"model": {"name": "bert"}, "seeds": [13, 21]}


def test_build_results_stores_odd_config_value_as_repr():
    class Schedule:
        def __repr__(self):
            return "Schedule(warmup=10)"

    results = aggregate.build_results(per_seed_metrics(), config={"schedule": Schedule()})

    assert results["config"]["schedule"] == "Schedule(warmup=10)"


def test_build_results_rejects_missing_seed():
    metrics_by_model = per_seed_metrics()
    del metrics_by_model["student"][42]

    with pytest.raises(ValueError, match=r"'student' has no results for seeds \[42\]"):
        aggregate.build_results(metrics_by_model, seeds=SEEDS)


def test_build_results_rejects_missing_metric():
    metrics_by_model = per_seed_metrics()
    del metrics_by_model["teacher"][87]["test_macro_f1"]

    with pytest.raises(ValueError, match="'teacher' seed 87 reports metrics"):
        aggregate.build_results(metrics_by_model)


def test_build_results_names_nonfinite_metric():
    metrics_by_model = per_seed_metrics()
    metrics_by_model["teacher"][21]["dev_accuracy"] = math.inf

    with pytest.raises(ValueError, match="'teacher' metric 'dev_accuracy'.*seed 21"):
        aggregate.build_results(metrics_by_model)


def test_build_results_rejects_invalid_model_name():
    with pytest.raises(ValueError, match="Invalid model name 'student/1'"):
        aggregate.build_results({"student/1": {13: {"test_accuracy": 0.5}}})


def test_git_commit_in_new_repository(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "file.txt").write_text("content\n")
    subprocess.run(git + ["add", "file.txt"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "Add file"], check=True)
    head_ref = (tmp_path / ".git" / "HEAD").read_text().split()[-1]
    expected = (tmp_path / ".git" / head_ref).read_text().strip()

    assert aggregate.git_commit(tmp_path) == expected
    assert aggregate.git_is_dirty(tmp_path) is False
    (tmp_path / "file.txt").write_text("changed\n")
    assert aggregate.git_is_dirty(tmp_path) is True


def test_git_commit_outside_repository(tmp_path):
    assert aggregate.git_commit(tmp_path) is None
    assert aggregate.git_is_dirty(tmp_path) is None


def test_git_commit_missing_folder(tmp_path):
    assert aggregate.git_commit(tmp_path / "missing") is None


def test_write_results_round_trip(tmp_path):
    results = aggregate.build_results(per_seed_metrics(), config={"task": "SST-2"})
    json_path, markdown_path = aggregate.write_results(tmp_path, results)

    assert json_path == tmp_path / outputs.RESULTS_JSON
    assert markdown_path == tmp_path / outputs.RESULTS_MARKDOWN
    assert aggregate.load_results(tmp_path) == json.loads(json.dumps(results))
    assert not list(tmp_path.glob(".*.tmp"))


def test_results_markdown_rows():
    results = aggregate.build_results(per_seed_metrics(), config={})
    text = report.format_results_markdown(results)

    for model in ("teacher", "student"):
        test_accuracy = results["models"][model]["test_accuracy"]
        dev_accuracy = results["models"][model]["dev_accuracy"]
        mean_std = f"{100 * test_accuracy['mean']:.1f} ± {100 * test_accuracy['std']:.1f}"
        dev_mean_std = f"{100 * dev_accuracy['mean']:.1f} ± {100 * dev_accuracy['std']:.1f}"
        seed_13 = f"13: {100 * test_accuracy['per_seed']['13']:.1f}"
        row = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
        assert mean_std in row
        assert dev_mean_std in row
        assert seed_13 in row
    assert "| model | dev acc | test acc (mean ± std) |" in text
    assert "ddof=0" in text


def test_results_markdown_missing_metric():
    results = aggregate.build_results({"student": {13: {"test_accuracy": 0.5}}})
    row = next(
        line for line in report.format_results_markdown(results).splitlines() if "student" in line
    )

    assert row.split(" | ")[1] == report.MISSING
    assert "50.0 ± 0.0" in row


def test_load_results_rejects_other_json(tmp_path):
    (tmp_path / "results.json").write_text('{"accuracy": 1}')

    with pytest.raises(ValueError, match="no 'models' entry"):
        aggregate.load_results(tmp_path)
