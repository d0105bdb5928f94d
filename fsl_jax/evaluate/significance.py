"""Significance of an accuracy difference between two models trained on the same seeds.

The main test is a paired bootstrap over test examples. Both models were evaluated
on the same test set for every seed, so each resample draws N test indices with
replacement once and applies them to every seed and both models. The statistic is
the difference of the seed-averaged accuracies, variant minus baseline, which is the
difference between the "mean" columns of the two results. Resampling examples
measures how much that difference depends on which test examples were drawn. It does
not measure the variation between training seeds, which the paired t-test over the
per-seed accuracies reports as a second figure.

Bootstrap outputs:

* the confidence interval is the percentile interval of the resampled differences;
* the two-sided p-value tests "no difference" by centring the resampled differences
  on zero: p = (1 + #{b : |d_b - d| >= |d|}) / (B + 1), where d is the observed
  difference and d_b the resampled ones. The +1 terms count the observed sample as
  one of the resamples, so p is never 0 for a finite B. An observed difference of
  exactly 0 gives p = 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

from fsl_jax.evaluate import metrics
from fsl_jax.evaluate.outputs import SeedPredictions

DEFAULT_NUM_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95

# Maximum number of resampled indices held in memory at once (int64, so 32 MB).
_MAX_INDICES_PER_CHUNK = 4_000_000

PredictionsBySeed = Mapping[int, SeedPredictions | Sequence[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap estimate of variant accuracy minus baseline accuracy."""

    baseline_accuracy: float  # mean over seeds
    variant_accuracy: float  # mean over seeds
    difference: float  # variant_accuracy - baseline_accuracy
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, null hypothesis of no difference
    confidence: float
    num_resamples: int
    num_examples: int
    num_seeds: int
    seed: int  # seed of the resampling generator


@dataclasses.dataclass(frozen=True)
class TTestResult:
    """Paired t-test over per-seed accuracies (variant minus baseline)."""

    mean_difference: float
    statistic: float  # NaN when undefined, see paired_t_test
    p_value: float  # two-sided; NaN when undefined
    degrees_of_freedom: int
    num_seeds: int


def _correctness(
    baseline: PredictionsBySeed, variant: PredictionsBySeed
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Check that both models cover the same seeds and test examples.

    Returns the sorted seeds and two bool arrays `[seeds, examples]` that mark the
    correct predictions of the baseline and of the variant.
    """
    baseline = {
        int(seed): SeedPredictions(*map(np.asarray, pair)) for seed, pair in baseline.items()
    }
    variant = {int(seed): SeedPredictions(*map(np.asarray, pair)) for seed, pair in variant.items()}
    if not baseline:
        raise ValueError("baseline has no seeds.")
    if set(baseline) != set(variant):
        raise ValueError(
            f"baseline and variant must cover the same seeds, got {sorted(baseline)} and "
            f"{sorted(variant)}."
        )
    seeds = sorted(baseline)
    reference_labels = baseline[seeds[0]].labels
    if reference_labels.ndim != 1 or reference_labels.size == 0:
        raise ValueError(
            f"labels of seed {seeds[0]} must be a non-empty 1-D array, got shape "
            f"{reference_labels.shape}."
        )

    baseline_correct, variant_correct = [], []
    for seed in seeds:
        for name, runs in (("baseline", baseline), ("variant", variant)):
            predictions, labels = runs[seed]
            if labels.shape != reference_labels.shape or not np.array_equal(
                labels, reference_labels
            ):
                # Joint resampling needs example i to be the same test example in
                # every seed and model, so the label arrays must match exactly.
                raise ValueError(
                    f"{name} seed {seed} labels differ from baseline seed {seeds[0]} labels "
                    f"(shapes {labels.shape} and {reference_labels.shape}). Every seed and "
                    "model must be evaluated on the same test set in the same order."
                )
            if predictions.shape != labels.shape:
                raise ValueError(
                    f"{name} seed {seed}: predictions shape {predictions.shape} does not "
                    f"match labels shape {labels.shape}."
                )
        baseline_correct.append(baseline[seed].predictions == reference_labels)
        variant_correct.append(variant[seed].predictions == reference_labels)
    return seeds, np.stack(baseline_correct), np.stack(variant_correct)


def paired_bootstrap(
    baseline: PredictionsBySeed,
    variant: PredictionsBySeed,
    *,
    num_resamples: int = DEFAULT_NUM_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> BootstrapResult:
    """Run the paired bootstrap described in the module docstring.

    Args:
      baseline, variant: `{seed: (predictions, labels)}` with int `[N]` arrays in
        test-set order, for example from `outputs.load_predictions`.
      num_resamples: number of bootstrap resamples B.
      confidence: coverage of the percentile interval.
      seed: seed of the numpy generator that draws the resamples. The same inputs
        and seed give the same result.

    Raises:
      ValueError: the seeds or test sets of the two models differ, or an argument
        is out of range.
    """
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be at least 1, got {num_resamples}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    seeds, baseline_correct, variant_correct = _correctness(baseline, variant)
    num_seeds, num_examples = baseline_correct.shape

    # Integer form of the statistic: the difference in correct counts summed over
    # seeds, per example. Sums of resampled rows are exact integers, so the p-value
    # comparisons have no rounding error. Dividing by seeds * examples gives the
    # difference of seed-averaged accuracies.
    per_example = variant_correct.sum(axis=0, dtype=np.int64) - baseline_correct.sum(
        axis=0, dtype=np.int64
    )
    observed = int(per_example.sum())
    scale = num_seeds * num_examples

    generator = np.random.default_rng(seed)
    chunk_size = max(1, _MAX_INDICES_PER_CHUNK // num_examples)
    resampled = np.empty(num_resamples, dtype=np.int64)
    for start in range(0, num_resamples, chunk_size):
        stop = min(start + chunk_size, num_resamples)
        indices = generator.integers(0, num_examples, size=(stop - start, num_examples))
        resampled[start:stop] = per_example[indices].sum(axis=1)

    extreme = np.abs(resampled - observed) >= abs(observed)
    p_value = (1 + int(extreme.sum())) / (num_resamples + 1)
    tail = (1 - confidence) / 2
    ci_low, ci_high = np.quantile(resampled / scale, [tail, 1 - tail])

    return BootstrapResult(
        baseline_accuracy=float(baseline_correct.mean()),
        variant_accuracy=float(variant_correct.mean()),
        difference=observed / scale,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        p_value=float(p_value),
        confidence=confidence,
        num_resamples=num_resamples,
        num_examples=num_examples,
        num_seeds=num_seeds,
        seed=seed,
    )


def paired_t_test(
    baseline_accuracies: Mapping[int, float], variant_accuracies: Mapping[int, float]
) -> TTestResult:
    """Run scipy's paired t-test (`ttest_rel`) on per-seed accuracies.

    The test is undefined for a single seed, and when every seed shows the same
    nonzero difference (zero variance). Both cases return NaN statistic and
    p-value. When every difference is 0, the statistic is 0 and p = 1.

    Raises:
      ValueError: the two mappings cover different seeds, or none.
    """
    baseline_accuracies = {int(seed): float(value) for seed, value in baseline_accuracies.items()}
    variant_accuracies = {int(seed): float(value) for seed, value in variant_accuracies.items()}
    if not baseline_accuracies:
        raise ValueError("baseline_accuracies has no seeds.")
    if set(baseline_accuracies) != set(variant_accuracies):
        raise ValueError(
            f"Both models must cover the same seeds, got {sorted(baseline_accuracies)} and "
            f"{sorted(variant_accuracies)}."
        )
    seeds = sorted(baseline_accuracies)
    baseline_values = np.array([baseline_accuracies[seed] for seed in seeds])
    variant_values = np.array([variant_accuracies[seed] for seed in seeds])
    differences = variant_values - baseline_values
    mean_difference = float(differences.mean())
    degrees_of_freedom = len(seeds) - 1

    # Accuracies are ratios of small integers, so equal differences can still differ
    # in the last bits; scipy would then return a huge, meaningless t.
    if np.all(np.abs(differences) <= 1e-12):
        statistic, p_value = 0.0, 1.0
    elif degrees_of_freedom == 0 or np.ptp(differences) <= 1e-12:
        statistic, p_value = math.nan, math.nan
    else:
        test = scipy.stats.ttest_rel(variant_values, baseline_values)
        statistic, p_value = float(test.statistic), float(test.pvalue)

    return TTestResult(
        mean_difference=mean_difference,
        statistic=statistic,
        p_value=p_value,
        degrees_of_freedom=degrees_of_freedom,
        num_seeds=len(seeds),
    )


def per_seed_accuracies(runs: PredictionsBySeed) -> dict[int, float]:
    """Compute the test accuracy of each seed from its predictions and labels."""
    return {int(seed): metrics.accuracy(*pair) for seed, pair in runs.items()}


def compare_to_baseline(
    baseline: PredictionsBySeed,
    variant: PredictionsBySeed,
    *,
    num_resamples: int = DEFAULT_NUM_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, float | int]:
    """Run the paired bootstrap and the paired t-test and return both as one flat dict.

    Keys: `baseline_accuracy`, `variant_accuracy`, `difference`, `ci_low`, `ci_high`,
    `p_value` (bootstrap), `t_statistic`, `t_p_value`, `num_resamples`,
    `confidence`, `num_examples`, `num_seeds`.
    """
    bootstrap = paired_bootstrap(
        baseline, variant, num_resamples=num_resamples, confidence=confidence, seed=seed
    )
    t_test = paired_t_test(per_seed_accuracies(baseline), per_seed_accuracies(variant))
    return {
        "baseline_accuracy": bootstrap.baseline_accuracy,
        "variant_accuracy": bootstrap.variant_accuracy,
        "difference": bootstrap.difference,
        "ci_low": bootstrap.ci_low,
        "ci_high": bootstrap.ci_high,
        "p_value": bootstrap.p_value,
        "t_statistic": t_test.statistic,
        "t_p_value": t_test.p_value,
        "num_resamples": bootstrap.num_resamples,
        "confidence": bootstrap.confidence,
        "num_examples": bootstrap.num_examples,
        "num_seeds": bootstrap.num_seeds,
    }
