"""Markdown rendering of `results.json` records.

Scores in [0, 1] are shown as percentages with one decimal, "mean ± std", the
precision of the LM-BFF tables.
"""

from __future__ import annotations

from typing import Any, Mapping

MISSING = "–"


def format_percent(value: float | None, digits: int = 1) -> str:
    """Format a score in [0, 1] as a percentage without the sign, e.g. 0.9234 -> "92.3"."""
    if value is None:
        return MISSING
    return f"{100 * value:.{digits}f}"


def format_mean_std(summary: Mapping[str, Any] | None, digits: int = 1) -> str:
    """Format a `summarize_seeds` dict as "mean ± std" in percent."""
    if summary is None:
        return MISSING
    return f"{format_percent(summary['mean'], digits)} ± {format_percent(summary['std'], digits)}"


def format_per_seed(summary: Mapping[str, Any] | None, digits: int = 1) -> str:
    """Format the per-seed values of a `summarize_seeds` dict as "13: 91.2, 21: 90.8"."""
    if summary is None:
        return MISSING
    return ", ".join(
        f"{seed}: {format_percent(value, digits)}" for seed, value in summary["per_seed"].items()
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Render a GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def format_results_markdown(results: Mapping[str, Any]) -> str:
    """Render a `results.json` record as the Markdown page `results.md`.

    One table row per model: dev accuracy, test accuracy and test macro-F1 as
    mean ± std over seeds, then the per-seed test accuracies. A metric the model
    does not report shows as "–".
    """
    header = [
        "model",
        "dev acc",
        "test acc (mean ± std)",
        "test macro-F1 (mean ± std)",
        "test acc per seed",
    ]
    rows = []
    for model, metrics in results["models"].items():
        rows.append(
            [
                model,
                format_mean_std(metrics.get("dev_accuracy")),
                format_mean_std(metrics.get("test_accuracy")),
                format_mean_std(metrics.get("test_macro_f1")),
                format_per_seed(metrics.get("test_accuracy")),
            ]
        )

    seeds = ", ".join(str(seed) for seed in results.get("seeds", []))
    ddof = results.get("std_ddof", 0)
    lines = [
        "# Results",
        "",
        markdown_table(header, rows),
        "",
        f"Scores in percent over seeds {seeds}. std is the standard deviation with ddof={ddof}.",
        "",
        f"- created: {results.get('created', MISSING)}",
        f"- git commit: {results.get('git_commit') or 'unknown'}"
        + (" (uncommitted changes)" if results.get("git_dirty") else ""),
    ]
    versions = results.get("versions") or {}
    if versions:
        listed = ", ".join(
            f"{name} {version or 'not installed'}" for name, version in versions.items()
        )
        lines.append(f"- versions: {listed}")
    return "\n".join(lines) + "\n"
