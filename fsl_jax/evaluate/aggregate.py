"""Multi-seed aggregation and the `results.json` record of a run.

A run trains and evaluates each model once per data seed (the LM-BFF splits use
seeds 13, 21, 42, 87 and 100). Each metric is reported as the mean over seeds with
the standard deviation and the per-seed values.

`std` is the population standard deviation (numpy's default, ddof=0). LM-BFF's
`tools/gather_result.py` prints `np.std` of the per-seed test scores, so `std` is
the number to set beside the "mean (std)" entries of the LM-BFF tables, and results
of follow-up work that reuse that script. With five seeds it is sqrt(4/5), about
0.89, times the sample standard deviation (ddof=1), which is stored as `sample_std`
for readers who expect that estimator.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from absl import logging

from fsl_jax.evaluate import outputs, report

STD_DDOF = 0

# PyPI distribution names, also the keys of results.json "versions".
VERSIONED_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "transformers",
    "numpy",
)

# The source checkout that contains the fsl_jax package.
SOURCE_DIR = Path(__file__).resolve().parents[2]


def summarize_seeds(values_by_seed: Mapping[int | str, float]) -> dict[str, Any]:
    """Compute mean, `std` (ddof=0), `sample_std` (ddof=1) and per-seed values.

    Returns `{"mean", "std", "sample_std", "per_seed", "num_seeds"}`. `per_seed` has
    string keys, as JSON objects need, in ascending seed order. `sample_std` is None
    for a single seed.

    Raises:
      ValueError: no seeds, or a value that is not a finite number.
    """
    if not values_by_seed:
        raise ValueError("Cannot summarize an empty set of seeds.")
    ordered = sorted(values_by_seed.items(), key=lambda item: int(item[0]))
    values = []
    for seed, value in ordered:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"Value for seed {seed} must be a number, got {value!r}.")
        if not math.isfinite(float(value)):
            raise ValueError(f"Value for seed {seed} is not finite: {value!r}.")
        values.append(float(value))
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=STD_DDOF)),
        "sample_std": float(array.std(ddof=1)) if array.size > 1 else None,
        "per_seed": {str(int(seed)): value for (seed, _), value in zip(ordered, values)},
        "num_seeds": int(array.size),
    }


def collect_versions() -> dict[str, str | None]:
    """Return the Python version and the installed version of each VERSIONED_PACKAGES entry.

    A package that is not installed maps to None.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _run_git(repo_dir: str | os.PathLike, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", "-C", os.fspath(repo_dir), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        # OSError covers a missing git binary or folder, ValueError undecodable
        # output, and SubprocessError a non-zero exit (not a repository) or a timeout.
        logging.info("git %s in %s failed: %s", " ".join(args), repo_dir, error)
        return None
    return completed.stdout


def git_commit(repo_dir: str | os.PathLike = SOURCE_DIR) -> str | None:
    """Return the commit hash checked out in `repo_dir`, or None when it cannot be read.

    None covers a folder outside a git repository, a repository without commits and
    a machine without git. A failed git call is logged at INFO level, not raised.
    """
    stdout = _run_git(repo_dir, "rev-parse", "--verify", "HEAD")
    return stdout.strip() if stdout else None


def git_is_dirty(repo_dir: str | os.PathLike = SOURCE_DIR) -> bool | None:
    """Return whether tracked files in `repo_dir` differ from the commit, or None if unknown."""
    stdout = _run_git(repo_dir, "status", "--porcelain", "--untracked-files=no")
    return None if stdout is None else bool(stdout.strip())


def _config_to_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict and FrozenConfigDict
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or a ConfigDict, got {type(config).__name__}.")
    return {str(key): _config_value_to_jsonable(str(key), value) for key, value in config.items()}


def _config_value_to_jsonable(key: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _config_value_to_jsonable(f"{key}.{k}", v) for k, v in value.items()}
    try:
        return outputs.to_jsonable(value)
    except TypeError:
        # Losing a run's results over one odd config value would cost more than
        # storing its repr, so store the repr and log a warning.
        logging.warning("Config value %s of type %s stored as its repr.", key, type(value).__name__)
        return repr(value)


def build_results(
    per_seed_metrics: Mapping[str, Mapping[int, Mapping[str, float]]],
    *,
    config: Any = None,
    seeds: Iterable[int] | None = None,
    repo_dir: str | os.PathLike | None = SOURCE_DIR,
    created: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Aggregate per-seed metrics into the `results.json` record.

    Args:
      per_seed_metrics: `{model: {seed: {metric: value}}}`, for example
        `{"teacher": {13: {"dev_accuracy": 0.91, "test_accuracy": 0.90,
        "test_macro_f1": 0.89}}}`. Every model must report the same metrics for
        every seed.
      config: the run's config, a mapping or an `ml_collections.ConfigDict`.
      seeds: the seeds the run was asked for. Defaults to the seeds found, and each
        model must have every one of them.
      repo_dir: checkout whose commit is recorded; None records no commit.
      created: timestamp to record; defaults to now in UTC.

    Returns:
      `{"models": {model: {metric: summarize_seeds(...)}}, "seeds", "std_ddof",
      "config", "versions", "git_commit", "git_dirty", "created"}`.

    Raises:
      ValueError: no models, a model misses a seed or a metric, or a value is not
        a finite number. The message names the model, seed and metric.
    """
    if not per_seed_metrics:
        raise ValueError("per_seed_metrics is empty: there are no models to aggregate.")
    found_seeds = {int(seed) for runs in per_seed_metrics.values() for seed in runs}
    expected_seeds = sorted(found_seeds if seeds is None else {int(seed) for seed in seeds})
    if not expected_seeds:
        raise ValueError("No seeds to aggregate: every model has an empty set of runs.")

    models = {}
    for model, runs in per_seed_metrics.items():
        outputs.validate_name(model)
        models[model] = _summarize_model(model, runs, expected_seeds)

    created = created or datetime.datetime.now(datetime.timezone.utc)
    return {
        "models": models,
        "seeds": expected_seeds,
        "std_ddof": STD_DDOF,
        "config": _config_to_dict(config),
        "versions": collect_versions(),
        "git_commit": None if repo_dir is None else git_commit(repo_dir),
        "git_dirty": None if repo_dir is None else git_is_dirty(repo_dir),
        "created": created.isoformat(timespec="seconds"),
    }


def _summarize_model(
    model: str, runs: Mapping[int, Mapping[str, float]], seeds: list[int]
) -> dict[str, dict[str, Any]]:
    runs = {int(seed): metrics for seed, metrics in runs.items()}
    missing = [seed for seed in seeds if seed not in runs]
    if missing:
        raise ValueError(
            f"Model {model!r} has no results for seeds {missing}. Run those seeds, or "
            "leave them out of `seeds`."
        )
    extra = sorted(set(runs) - set(seeds))
    if extra:
        raise ValueError(
            f"Model {model!r} has results for seeds {extra}, which are not in {seeds}. "
            "Add them to `seeds` or drop their results."
        )

    metric_names = list(runs[seeds[0]])
    if not metric_names:
        raise ValueError(f"Model {model!r} seed {seeds[0]} reports no metrics.")
    for seed in seeds:
        if set(runs[seed]) != set(metric_names):
            raise ValueError(
                f"Model {model!r} seed {seed} reports metrics {sorted(runs[seed])}, but "
                f"seed {seeds[0]} reports {sorted(metric_names)}."
            )

    summaries = {}
    for metric in metric_names:
        try:
            summaries[metric] = summarize_seeds({seed: runs[seed][metric] for seed in seeds})
        except ValueError as error:
            raise ValueError(f"Model {model!r} metric {metric!r}: {error}") from error
    return summaries


def write_results(workdir: str | os.PathLike, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `results.json` and its Markdown table `results.md` into `workdir`.

    Both files are replaced atomically. Returns their paths.
    """
    workdir = Path(workdir)
    json_path = outputs.write_json_atomic(workdir / outputs.RESULTS_JSON, results)
    markdown_path = outputs.write_text_atomic(
        workdir / outputs.RESULTS_MARKDOWN, report.format_results_markdown(results)
    )
    logging.info("Wrote %s and %s.", json_path, markdown_path)
    return json_path, markdown_path


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a `results.json` file, or `<path>/results.json` when `path` is a folder.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file has no "models" entry, so it is not a results file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / outputs.RESULTS_JSON
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results, dict) or "models" not in results:
        raise ValueError(f"{path} has no 'models' entry, so it is not a results.json file.")
    return results
