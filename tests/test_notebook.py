"""Execute notebooks/analysis.ipynb end to end on small synthetic runs.

The runs are written with the fsl_jax.evaluate writers, so a change to a file format
that the notebook does not follow fails here.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from fsl_jax.evaluate import aggregate, metrics, outputs

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "analysis.ipynb"
SEEDS = [13, 21, 42]
NUM_EXAMPLES = 200
NUM_STEPS = 50


def write_synthetic_run(workdir, accuracy_by_model, labels, generator):
    """Write results.json, predictions and metrics.jsonl of a small three-seed run."""
    per_seed_metrics = {model: {} for model in accuracy_by_model}
    for model, accuracy in accuracy_by_model.items():
        for seed in SEEDS:
            correct = generator.random(labels.shape) < accuracy
            predictions = np.where(correct, labels, 1 - labels)
            outputs.write_predictions(workdir, model, seed, predictions, labels)
            per_seed_metrics[model][seed] = {
                "dev_accuracy": float(np.clip(accuracy + generator.normal(0, 0.02), 0, 1)),
                "test_accuracy": metrics.accuracy(predictions, labels),
                "test_macro_f1": metrics.macro_f1(predictions, labels),
            }
            for step in range(0, NUM_STEPS + 1, 5):
                outputs.append_metrics(
                    workdir, seed=seed, model=model, step=step, train_loss=float(np.exp(-step / 20))
                )
                if step % 10 == 0:
                    progress = step / NUM_STEPS
                    outputs.append_metrics(
                        workdir,
                        seed=seed,
                        model=model,
                        step=step,
                        dev_accuracy=0.5 + (accuracy - 0.5) * progress,
                    )
    results = aggregate.build_results(per_seed_metrics, config={"task": "synthetic"}, repo_dir=None)
    aggregate.write_results(workdir, results)


def execute_notebook(results_dir, monkeypatch):
    monkeypatch.setenv("FSL_JAX_RESULTS_DIR", str(results_dir))
    monkeypatch.setenv("FSL_JAX_NUM_RESAMPLES", "500")
    # The kernel is a new process, so it finds fsl_jax through PYTHONPATH.
    python_path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), python_path])))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    return notebook


def code_outputs(notebook):
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def count_images(notebook):
    return sum(1 for output in code_outputs(notebook) if "image/png" in output.get("data", {}))


def output_text(notebook):
    parts = []
    for output in code_outputs(notebook):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/markdown", ""))
    return "\n".join(parts)


def test_notebook_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]

    assert code_cells
    assert all(not cell.outputs for cell in code_cells)
    assert any("parameters" in cell.metadata.get("tags", []) for cell in code_cells)


def test_notebook_single_run(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    generator = np.random.default_rng(0)
    labels = generator.integers(0, 2, size=NUM_EXAMPLES)
    write_synthetic_run(workdir, {"teacher": 0.9, "student": 0.8}, labels, generator)

    notebook = execute_notebook(workdir, monkeypatch)

    errors = [output for output in code_outputs(notebook) if output.output_type == "error"]
    assert errors == []
    # Per-seed accuracy, mean ± std and learning curves.
    assert count_images(notebook) == 3
    text = output_text(notebook)
    assert "No ablation" in text
    assert "| teacher |" in text


def test_notebook_ablation(tmp_path, monkeypatch):
    generator = np.random.default_rng(1)
    labels = generator.integers(0, 2, size=NUM_EXAMPLES)  # one test set for every variant
    for variant, accuracy in [("kd", 0.75), ("kd_hidden_mse", 0.85)]:
        write_synthetic_run(tmp_path / variant, {"student": accuracy}, labels, generator)

    notebook = execute_notebook(tmp_path, monkeypatch)

    errors = [output for output in code_outputs(notebook) if output.output_type == "error"]
    assert errors == []
    # Per-seed accuracy, mean ± std, the ablation bars and learning curves.
    assert count_images(notebook) == 4
    text = output_text(notebook)
    assert "| kd (baseline) |" in text
    assert "| kd_hidden_mse |" in text


def test_notebook_missing_results_dir(tmp_path, monkeypatch):
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="No results.json found"):
        execute_notebook(tmp_path / "missing", monkeypatch)
