"""Compare loss variants of one model over the same seeds: ablation.md, .json and .png.

Each variant is a full multi-seed run (its own workdir with `results.json` and
`predictions/`). Test accuracies are recomputed from the saved predictions, and
every variant is compared with the baseline variant by the paired bootstrap and the
paired t-test of `fsl_jax.evaluate.significance`.
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path
from typing import Any, Mapping

from absl import logging
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fsl_jax.evaluate import aggregate, outputs, report, significance
from fsl_jax.evaluate.significance import PredictionsBySeed

ABLATION_JSON = "ablation.json"
ABLATION_MARKDOWN = "ablation.md"
ABLATION_PNG = "ablation.png"

# Maximum gap between a per-seed accuracy in results.json and the one recomputed
# from the saved predictions. float32 accumulation in the eval step stays far below.
_ACCURACY_TOLERANCE = 1e-5


# ------------------------------------------------------------------------------
# Building the comparison.
# ------------------------------------------------------------------------------


def build_ablation(
    predictions_by_variant: Mapping[str, PredictionsBySeed],
    baseline: str,
    *,
    model: str | None = None,
    num_resamples: int = significance.DEFAULT_NUM_RESAMPLES,
    confidence: float = significance.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Summarize each variant's test accuracy and compare it with the baseline.

    Args:
      predictions_by_variant: `{variant: {seed: (predictions, labels)}}`. All
        variants must cover the same seeds and the same test set.
      baseline: the variant the others are compared with.
      model: name of the compared model (for example "student"), recorded only.
      num_resamples, confidence, seed: bootstrap settings, see
        `significance.paired_bootstrap`.

    Returns:
      `{"baseline", "model", "metric", "seeds", "std_ddof", "bootstrap",
      "variants": {variant: {"test_accuracy": summarize_seeds(...),
      "comparison": compare_to_baseline(...) or None for the baseline}},
      "created"}`, with the baseline first among the variants.

    Raises:
      ValueError: the baseline is not among the variants, or the variants differ
        in seeds or test set.
    """
    if baseline not in predictions_by_variant:
        raise ValueError(
            f"Baseline {baseline!r} is not among the variants {sorted(predictions_by_variant)}."
        )
    for name in predictions_by_variant:
        outputs.validate_name(name, kind="variant")
    baseline_runs = predictions_by_variant[baseline]
    seeds = sorted(int(run_seed) for run_seed in baseline_runs)
    ordered_names = [baseline] + [name for name in predictions_by_variant if name != baseline]

    variants = {}
    for name in ordered_names:
        runs = predictions_by_variant[name]
        comparison = None
        if name != baseline:
            comparison = significance.compare_to_baseline(
                baseline_runs,
                runs,
                num_resamples=num_resamples,
                confidence=confidence,
                seed=seed,
            )
        variants[name] = {
            "test_accuracy": aggregate.summarize_seeds(significance.per_seed_accuracies(runs)),
            "comparison": comparison,
        }

    return {
        "baseline": baseline,
        "model": model,
        "metric": "test_accuracy",
        "seeds": seeds,
        "std_ddof": aggregate.STD_DDOF,
        "bootstrap": {"num_resamples": num_resamples, "confidence": confidence, "seed": seed},
        "variants": variants,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def load_variant_predictions(
    workdir: str | os.PathLike, model: str
) -> dict[int, outputs.SeedPredictions]:
    """Load one model's per-seed test predictions from a run's workdir.

    The seeds come from `results.json`, and the accuracy recomputed from each
    predictions file must match the `test_accuracy` recorded there.

    Raises:
      FileNotFoundError: `results.json` or a predictions file is missing.
      ValueError: the model is not in `results.json`, or a predictions file does not
        reproduce the recorded accuracy (it belongs to another run or checkpoint).
    """
    results = aggregate.load_results(workdir)
    if model not in results["models"]:
        raise ValueError(
            f"Model {model!r} not found in {Path(workdir) / outputs.RESULTS_JSON}; it has "
            f"{sorted(results['models'])}."
        )
    runs = outputs.load_predictions(workdir, model, results["seeds"])

    recorded = results["models"][model].get("test_accuracy", {}).get("per_seed", {})
    for run_seed, pair in runs.items():
        expected = recorded.get(str(run_seed))
        if expected is None:
            continue
        recomputed = significance.per_seed_accuracies({run_seed: pair})[run_seed]
        if abs(recomputed - expected) > _ACCURACY_TOLERANCE:
            raise ValueError(
                f"{outputs.predictions_path(workdir, model, run_seed)} gives test accuracy "
                f"{recomputed:.6f}, but results.json records {expected:.6f}. The predictions "
                "file does not belong to this run; rerun the test evaluation of that seed."
            )
    return runs


def discover_variant_dirs(root: str | os.PathLike) -> dict[str, Path]:
    """Map each subfolder of `root` that contains a `results.json` to its path, by name."""
    root = Path(root)
    return {
        path.name: path
        for path in sorted(root.iterdir())
        if path.is_dir() and (path / outputs.RESULTS_JSON).is_file()
    }


def ablation_from_workdirs(
    variant_dirs: Mapping[str, str | os.PathLike],
    baseline: str,
    *,
    model: str = "student",
    **bootstrap_options: Any,
) -> dict[str, Any]:
    """Load `model` from each variant's workdir and run `build_ablation` on it."""
    predictions_by_variant = {
        name: load_variant_predictions(path, model) for name, path in variant_dirs.items()
    }
    return build_ablation(predictions_by_variant, baseline, model=model, **bootstrap_options)


# ------------------------------------------------------------------------------
# Rendering.
# ------------------------------------------------------------------------------


def _format_points(value: float) -> str:
    """Format a difference in [−1, 1] as signed percentage points, e.g. "+1.2"."""
    return f"{100 * value:+.1f}"


def _format_p_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def format_ablation_markdown(ablation: Mapping[str, Any]) -> str:
    """Render a `build_ablation` record as the Markdown page `ablation.md`."""
    confidence = ablation["bootstrap"]["confidence"]
    level = f"{100 * confidence:g}%"
    header = [
        "variant",
        "test acc (mean ± std)",
        "diff vs baseline",
        f"{level} CI",
        "p-value (bootstrap)",
        "p-value (t-test)",
    ]
    rows = []
    for name, entry in ablation["variants"].items():
        comparison = entry["comparison"]
        if comparison is None:
            rows.append(
                [
                    f"{name} (baseline)",
                    report.format_mean_std(entry["test_accuracy"]),
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        interval = (
            f"[{_format_points(comparison['ci_low'])}, {_format_points(comparison['ci_high'])}]"
        )
        rows.append(
            [
                name,
                report.format_mean_std(entry["test_accuracy"]),
                _format_points(comparison["difference"]),
                interval,
                _format_p_value(comparison["p_value"]),
                _format_p_value(comparison["t_p_value"]),
            ]
        )

    model = ablation.get("model") or "model"
    seeds = ", ".join(str(run_seed) for run_seed in ablation["seeds"])
    num_resamples = ablation["bootstrap"]["num_resamples"]
    lines = [
        f"# Ablation: {model} test accuracy",
        "",
        report.markdown_table(header, rows),
        "",
        f"Accuracy in percent over seeds {seeds} (std with ddof={ablation['std_ddof']}). "
        "Differences are in percentage points, variant minus baseline.",
        f"The interval and the first p-value come from a paired bootstrap over test "
        f"examples ({num_resamples} resamples, the same indices for every seed). The "
        "second p-value is a paired t-test over the per-seed accuracies.",
        "",
        f"- created: {ablation.get('created', report.MISSING)}",
    ]
    return "\n".join(lines) + "\n"


def draw_ablation(axes: Axes, ablation: Mapping[str, Any]) -> None:
    """Draw one bar per variant (mean, std error bar) with a dot per seed on `axes`."""
    names = list(ablation["variants"])
    for position, name in enumerate(names):
        summary = ablation["variants"][name]["test_accuracy"]
        per_seed = [100 * value for value in summary["per_seed"].values()]
        color = "tab:gray" if name == ablation["baseline"] else "tab:blue"
        axes.bar(
            position,
            100 * summary["mean"],
            yerr=100 * summary["std"],
            color=color,
            alpha=0.6,
            capsize=4,
        )
        # Spread the dots a little so equal accuracies stay visible.
        offsets = [
            0.5 * (index / max(len(per_seed) - 1, 1) - 0.5) for index in range(len(per_seed))
        ]
        axes.scatter(
            [position + offset for offset in offsets], per_seed, color="black", s=12, zorder=3
        )

    all_values = [
        100 * value
        for entry in ablation["variants"].values()
        for value in entry["test_accuracy"]["per_seed"].values()
    ]
    margin = max(2.0, 0.25 * (max(all_values) - min(all_values)))
    axes.set_ylim(max(0.0, min(all_values) - margin), min(100.0, max(all_values) + margin))
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(
        f"{ablation.get('model') or 'model'}: mean ± std over {len(ablation['seeds'])} seeds"
    )


def write_ablation_report(
    output_dir: str | os.PathLike, ablation: Mapping[str, Any]
) -> tuple[Path, Path, Path]:
    """Write `ablation.json`, `ablation.md` and `ablation.png` into `output_dir`."""
    output_dir = Path(output_dir)
    json_path = outputs.write_json_atomic(output_dir / ABLATION_JSON, ablation)
    markdown_path = outputs.write_text_atomic(
        output_dir / ABLATION_MARKDOWN, format_ablation_markdown(ablation)
    )

    # A bare Figure renders with the Agg canvas and leaves pyplot's global backend
    # alone, so this works headless and inside notebooks.
    figure = Figure(figsize=(1.2 * len(ablation["variants"]) + 2.5, 4.0), layout="constrained")
    draw_ablation(figure.add_subplot(), ablation)
    png_path = output_dir / ABLATION_PNG
    figure.savefig(png_path, dpi=150)
    logging.info("Wrote %s, %s and %s.", json_path, markdown_path, png_path)
    return json_path, markdown_path, png_path
