"""Tests for the paired bootstrap and the paired t-test."""

import math

import numpy as np
import pytest
import scipy.stats

from fsl_jax.evaluate import significance
from fsl_jax.evaluate.outputs import SeedPredictions

SEEDS = [13, 21, 42, 87, 100]


def simulate_runs(labels, accuracy_by_seed, generator, num_classes=2):
    """Make per-seed predictions that are right with the given probability per example."""
    runs = {}
    for seed, accuracy in accuracy_by_seed.items():
        wrong = (labels + generator.integers(1, num_classes, size=labels.shape)) % num_classes
        predictions = np.where(generator.random(labels.shape) < accuracy, labels, wrong)
        runs[seed] = SeedPredictions(predictions, labels)
    return runs


@pytest.fixture
def labels():
    return np.random.default_rng(0).integers(0, 2, size=2000)


def mean_accuracy(runs):
    return np.mean([np.mean(pair.predictions == pair.labels) for pair in runs.values()])


def test_bootstrap_identical_predictions(labels):
    runs = simulate_runs(labels, {seed: 0.8 for seed in SEEDS}, np.random.default_rng(1))

    result = significance.paired_bootstrap(runs, runs, num_resamples=2000)

    assert result.difference == 0.0
    assert result.p_value == 1.0
    assert result.ci_low == 0.0
    assert result.ci_high == 0.0
    assert result.baseline_accuracy == pytest.approx(mean_accuracy(runs))


def test_bootstrap_clearly_better_variant(labels):
    generator = np.random.default_rng(2)
    baseline = simulate_runs(labels, {seed: 0.75 for seed in SEEDS}, generator)
    variant = simulate_runs(labels, {seed: 0.85 for seed in SEEDS}, generator)

    result = significance.paired_bootstrap(baseline, variant, num_resamples=10_000, seed=0)

    expected_difference = mean_accuracy(variant) - mean_accuracy(baseline)
    assert result.difference == pytest.approx(expected_difference, abs=1e-12)
    assert result.p_value < 0.001
    assert result.p_value >= 1 / 10_001
    assert result.ci_low > 0
    assert result.ci_low < result.difference < result.ci_high
    assert result.num_examples == 2000
    assert result.num_seeds == 5


def test_bootstrap_worse_variant_has_negative_interval(labels):
    generator = np.random.default_rng(3)
    baseline = simulate_runs(labels, {seed: 0.85 for seed in SEEDS}, generator)
    variant = simulate_runs(labels, {seed: 0.75 for seed in SEEDS}, generator)

    result = significance.paired_bootstrap(baseline, variant, num_resamples=2000)

    assert result.difference < 0
    assert result.ci_high < 0
    assert result.p_value < 0.01


def test_bootstrap_reproducible_with_seed(labels):
    generator = np.random.default_rng(4)
    baseline = simulate_runs(labels, {seed: 0.80 for seed in SEEDS}, generator)
    variant = simulate_runs(labels, {seed: 0.81 for seed in SEEDS}, generator)

    first = significance.paired_bootstrap(baseline, variant, num_resamples=3000, seed=5)
    second = significance.paired_bootstrap(baseline, variant, num_resamples=3000, seed=5)
    other = significance.paired_bootstrap(baseline, variant, num_resamples=3000, seed=6)

    assert first == second
    assert (other.ci_low, other.ci_high, other.p_value) != (
        first.ci_low,
        first.ci_high,
        first.p_value,
    )


def test_bootstrap_interval_matches_scipy(labels):
    generator = np.random.default_rng(5)
    baseline = simulate_runs(labels, {13: 0.70, 21: 0.72, 42: 0.74}, generator)
    variant = simulate_runs(labels, {13: 0.73, 21: 0.74, 42: 0.75}, generator)

    result = significance.paired_bootstrap(baseline, variant, num_resamples=10_000, seed=0)

    # Reference: scipy's percentile bootstrap of the mean of the per-example
    # differences averaged over seeds, which is the same statistic.
    per_example = np.mean(
        [
            (variant[s].predictions == labels).astype(float) - (baseline[s].predictions == labels)
            for s in baseline
        ],
        axis=0,
    )
    reference = scipy.stats.bootstrap(
        (per_example,),
        np.mean,
        n_resamples=10_000,
        confidence_level=0.95,
        method="percentile",
        random_state=np.random.default_rng(123),
    )
    # Both intervals are Monte Carlo estimates, so they agree only up to sampling
    # noise, which is a few percent of the standard error at 10,000 resamples (an
    # estimate from the quantile's binomial spread).
    tolerance = 0.1 * reference.standard_error
    assert result.ci_low == pytest.approx(reference.confidence_interval.low, abs=tolerance)
    assert result.ci_high == pytest.approx(reference.confidence_interval.high, abs=tolerance)


def test_bootstrap_p_value_matches_normal_approximation(labels):
    # One seed, 2000 examples: the variant fixes 35 baseline errors and breaks 20
    # correct predictions, so the difference is about two standard errors.
    baseline_predictions = labels.copy()
    variant_predictions = labels.copy()
    baseline_predictions[:35] = 1 - labels[:35]
    variant_predictions[35:55] = 1 - labels[35:55]
    baseline = {13: SeedPredictions(baseline_predictions, labels)}
    variant = {13: SeedPredictions(variant_predictions, labels)}

    result = significance.paired_bootstrap(baseline, variant, num_resamples=20_000, seed=1)

    # Reference: the two-sided normal tail at |d| / se, with a continuity correction
    # of half a step, because the resampled means move in steps of 1 / N.
    per_example = (variant_predictions == labels).astype(float) - (baseline_predictions == labels)
    standard_error = per_example.std() / math.sqrt(len(labels))
    corrected = abs(per_example.mean()) - 0.5 / len(labels)
    expected_p = 2 * scipy.stats.norm.sf(corrected / standard_error)
    assert result.difference == pytest.approx(15 / 2000)
    assert result.p_value == pytest.approx(expected_p, abs=0.005)


def test_bootstrap_zero_difference_with_changes(labels):
    # The variant fixes 30 errors and makes 30 new ones, so the net difference is 0.
    baseline_predictions = labels.copy()
    variant_predictions = labels.copy()
    baseline_predictions[:30] = 1 - labels[:30]
    variant_predictions[30:60] = 1 - labels[30:60]

    result = significance.paired_bootstrap(
        {13: (baseline_predictions, labels)},
        {13: (variant_predictions, labels)},
        num_resamples=1000,
    )

    assert result.difference == 0.0
    assert result.p_value == 1.0
    assert result.ci_low < 0 < result.ci_high


def test_bootstrap_rejects_different_seeds(labels):
    runs = {13: (labels, labels), 21: (labels, labels)}

    with pytest.raises(ValueError, match=r"same seeds, got \[13, 21\] and \[13\]"):
        significance.paired_bootstrap(runs, {13: (labels, labels)})


def test_bootstrap_rejects_reordered_test_set(labels):
    shuffled = np.random.default_rng(0).permutation(labels)
    baseline = {13: (labels, labels), 21: (labels, labels)}
    variant = {13: (labels, labels), 21: (shuffled, shuffled)}

    with pytest.raises(ValueError, match="variant seed 21 labels differ"):
        significance.paired_bootstrap(baseline, variant)


def test_bootstrap_rejects_short_predictions(labels):
    with pytest.raises(
        ValueError, match=r"predictions shape \(10,\) does not match labels shape \(2000,\)"
    ):
        significance.paired_bootstrap({13: (labels, labels)}, {13: (labels[:10], labels)})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_resamples": 0}, "num_resamples must be at least 1"),
        ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
    ],
)
def test_bootstrap_rejects_options(labels, options, message):
    runs = {13: (labels, labels)}

    with pytest.raises(ValueError, match=message):
        significance.paired_bootstrap(runs, runs, **options)


def test_t_test_matches_scipy():
    baseline = {13: 0.80, 21: 0.82, 42: 0.79, 87: 0.81, 100: 0.78}
    variant = {13: 0.83, 21: 0.82, 42: 0.84, 87: 0.85, 100: 0.80}

    result = significance.paired_t_test(baseline, variant)

    reference = scipy.stats.ttest_rel([variant[s] for s in SEEDS], [baseline[s] for s in SEEDS])
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.degrees_of_freedom == 4
    assert result.mean_difference == pytest.approx(
        np.mean([variant[s] - baseline[s] for s in SEEDS])
    )


def test_t_test_identical_accuracies():
    accuracies = {13: 0.8, 21: 0.7, 42: 0.9}

    result = significance.paired_t_test(accuracies, dict(accuracies))

    assert result.statistic == 0.0
    assert result.p_value == 1.0


def test_t_test_undefined_cases():
    single = significance.paired_t_test({13: 0.8}, {13: 0.9})
    constant = significance.paired_t_test({13: 0.5, 21: 0.6, 42: 0.7}, {13: 0.6, 21: 0.7, 42: 0.8})

    assert math.isnan(single.p_value)
    assert single.degrees_of_freedom == 0
    assert math.isnan(constant.statistic)
    assert math.isnan(constant.p_value)


def test_compare_to_baseline_combines_tests(labels):
    generator = np.random.default_rng(8)
    baseline = simulate_runs(labels, {seed: 0.75 for seed in SEEDS}, generator)
    variant = simulate_runs(labels, {seed: 0.80 for seed in SEEDS}, generator)

    comparison = significance.compare_to_baseline(baseline, variant, num_resamples=1000, seed=3)

    bootstrap = significance.paired_bootstrap(baseline, variant, num_resamples=1000, seed=3)
    reference = scipy.stats.ttest_rel(
        [np.mean(variant[s].predictions == labels) for s in SEEDS],
        [np.mean(baseline[s].predictions == labels) for s in SEEDS],
    )
    assert comparison["difference"] == bootstrap.difference
    assert comparison["ci_low"] == bootstrap.ci_low
    assert comparison["p_value"] == bootstrap.p_value
    assert comparison["t_statistic"] == pytest.approx(reference.statistic)
    assert comparison["t_p_value"] == pytest.approx(reference.pvalue)
    assert comparison["num_resamples"] == 1000
