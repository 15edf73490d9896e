"""llamavid_eval.core.stats against hand-computed values, and the coverage of its 95% intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llamavid_eval.core import stats


def test_describe_and_dict_say_value_interval_method_and_n():
    interval = stats.Interval(69.7, 68.9, 70.5, 13157, 1970, "m")
    assert interval.half_width == pytest.approx(0.8)
    assert interval.describe() == "69.7 ± 0.8 (95% CI 68.9-70.5; m; n=13157 in 1970 clusters)"
    assert stats.Interval(1.0, 0.5, 1.5, 10, 10, "m").describe() == "1.0 ± 0.5 (95% CI 0.5-1.5; m; n=10)"
    assert (
        stats.Interval(-1.0, -2.0, 0.0, 4, 2, "m").describe() == "-1.0 ± 1.0 (95% CI -2.0 to 0.0; m; n=4 in 2 clusters)"
    )
    assert "no 95% CI" in stats.Interval(1.0, math.nan, math.nan, 3, 1, "m").describe()
    as_dict = interval.to_dict()
    assert as_dict["n"] == 13157 and as_dict["half_width"] == pytest.approx(0.8) and as_dict["method"] == "m"
    assert interval.scaled(100).low == pytest.approx(6890)


def test_cluster_robust_stderr_by_hand():
    values = [1, 1, 0, 0, 1, 0]
    # mean 0.5; residual sums per cluster 1, -1, 0; CR1: sqrt(3/2 * 2) / 6
    assert stats.cluster_robust_stderr(values, ["a", "a", "b", "b", "c", "c"]) == pytest.approx(math.sqrt(3) / 6)
    # unclustered: the ordinary std(ddof=1)/sqrt(n) = sqrt(0.3 / 6)
    assert stats.cluster_robust_stderr(values, None) == pytest.approx(math.sqrt(0.3 / 6))
    # nan items leave; a single cluster gives no standard error
    assert stats.cluster_robust_stderr([1, math.nan, 0, 1], None) == pytest.approx(
        np.std([1, 0, 1], ddof=1) / math.sqrt(3)
    )
    assert math.isnan(stats.cluster_robust_stderr([1, 0], ["v", "v"]))


def test_mcnemar_exact_by_hand():
    # 1 vs 9 discordant: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError, match="only_a"):
        stats.mcnemar_exact(-1, 3)


def test_cohen_kappa_by_hand():
    # 2x2: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po 0.7, pe 0.5*0.6 + 0.5*0.4 = 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    assert stats.cohen_kappa([*a, None], [*b, "yes"]) == pytest.approx(0.4)  # missing label: pair left out
    assert stats.cohen_kappa([True, False, True], [True, False, True]) == pytest.approx(1.0)
    assert math.isnan(stats.cohen_kappa(["yes", "yes"], ["yes", "yes"]))  # chance agreement 1: undefined
    assert math.isnan(stats.cohen_kappa([], []))


def test_kendall_tau_by_hand():
    tau, p = stats.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])  # 5 concordant, 1 discordant pair
    assert tau == pytest.approx(4 / 6) and 0 < p <= 1
    assert stats.kendall_tau([1, 2, math.nan], [2, 1, 3])[0] == pytest.approx(-1.0)
    assert all(math.isnan(v) for v in stats.kendall_tau([1.0], [2.0]))


def test_bootstrap_mean_excludes_nan_and_counts_clusters():
    values = [1, 0, math.nan, 1, 1, 0]
    interval = stats.cluster_bootstrap_mean(values, ["a", "a", "b", "b", "c", "c"], resamples=200)
    assert interval.estimate == pytest.approx(0.6) and interval.n == 5 and interval.clusters == 3
    assert interval.low <= 0.6 <= interval.high
    assert "over videos, 200 resamples, seed 0" in interval.method
    again = stats.cluster_bootstrap_mean(values, ["a", "a", "b", "b", "c", "c"], resamples=200)
    assert again == interval  # fixed seed: reproducible
    constant = stats.cluster_bootstrap_mean([0.5] * 8)
    assert (constant.low, constant.high, constant.clusters) == (0.5, 0.5, 8)
    assert math.isnan(stats.cluster_bootstrap_mean([math.nan]).estimate)
    one_video = stats.cluster_bootstrap_mean([1, 0, 1], ["v"] * 3)
    assert one_video.estimate == pytest.approx(2 / 3) and math.isnan(one_video.low)
    with pytest.raises(ValueError, match="one cluster id"):
        stats.cluster_bootstrap_mean([1, 0], ["v"])


def test_clustered_interval_wider_than_naive_and_matches_cr1():
    # 30 videos of 10 questions each, every question of a video answered the same way: 30 effective items
    rng = np.random.default_rng(0)
    per_video = (rng.random(30) < 0.5).astype(float)
    values, videos = np.repeat(per_video, 10), np.repeat(np.arange(30), 10)
    naive = stats.cluster_bootstrap_mean(values)
    clustered = stats.cluster_bootstrap_mean(values, videos)
    assert clustered.n == naive.n == 300 and clustered.clusters == 30 and naive.clusters == 300
    assert clustered.half_width > 2.5 * naive.half_width  # ~sqrt(10) times wider
    assert clustered.half_width == pytest.approx(1.96 * stats.cluster_robust_stderr(values, videos), rel=0.15)
    assert naive.half_width == pytest.approx(1.96 * stats.cluster_robust_stderr(values, None), rel=0.15)


def test_bootstrap_statistic_matches_the_mean_bootstrap_on_the_same_draws():
    rng = np.random.default_rng(3)
    values, videos = (rng.random(300) < 0.6).astype(float), rng.integers(0, 40, 300)
    direct = stats.cluster_bootstrap_mean(values, videos, resamples=300)
    generic = stats.bootstrap_statistic(lambda x: x.mean(), {"x": values}, videos, resamples=300)
    assert generic == direct


def test_bootstrap_statistic_for_kappa_drops_missing_rows():
    a = np.array(["yes"] * 25 + ["no"] * 25 + [None] * 3, dtype=object)
    b = np.array(["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15 + ["no"] * 3, dtype=object)
    interval = stats.bootstrap_statistic(stats.cohen_kappa, {"a": a, "b": b}, resamples=300, name="Cohen's kappa")
    assert interval.estimate == pytest.approx(0.4) and interval.n == 50
    assert interval.low < 0.4 < interval.high and interval.method.startswith("Cohen's kappa; bootstrap")
    with pytest.raises(ValueError, match="differ in length"):
        stats.bootstrap_statistic(stats.cohen_kappa, {"a": a, "b": b[:-1]})


def test_paired_difference_by_hand():
    a = [1, 1, 0, 0, 1, 0, 1, 1, math.nan]
    b = [1, 1, 1, 0, 1, 1, 1, 1, 1]
    videos = ["p", "p", "q", "q", "r", "r", "s", "s", "s"]
    diff = stats.paired_difference(a, b, videos, resamples=500)
    assert diff.estimate == pytest.approx(0.25) and diff.n == 8 and diff.clusters == 4
    assert 0 <= diff.low <= 0.25 <= diff.high <= 0.5  # per-video mean differences are 0, 0.5, 0.5, 0, 0
    same = stats.paired_difference(b, b, videos)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="matched items"):
        stats.paired_difference([1, 0], [1])


def test_paired_interval_narrower_than_separate_ones_when_runs_agree_mostly():
    rng = np.random.default_rng(1)
    a = (rng.random(2000) < 0.6).astype(float)
    b = np.where(rng.random(2000) < 0.05, 1 - a, a)  # b flips 5% of a's answers
    diff = stats.paired_difference(a, b, resamples=500)
    separate = stats.cluster_bootstrap_mean(a, resamples=500)
    assert diff.half_width < 0.5 * separate.half_width * math.sqrt(2)


def _clustered_yes_no(
    rng: np.random.Generator, videos: int, per_video: int, truth: float
) -> tuple[np.ndarray, np.ndarray]:
    """Yes/no items whose per-video success rates vary around ``truth`` (Beta with mean ``truth``)."""
    rates = rng.beta(3 * truth / (1 - truth), 3, size=videos)
    values = (rng.random((videos, per_video)) < rates[:, None]).astype(float).reshape(-1)
    return values, np.repeat(np.arange(videos), per_video)


def test_coverage_of_clustered_intervals_on_simulated_data():
    """400 simulated datasets with a known truth: the clustered 95% intervals cover it 93-97% of the
    time, while the naive (item) interval on the same data falls clearly short - so the test can fail."""
    rng, truth, runs = np.random.default_rng(2024), 0.6, 400
    covered = {"bootstrap": 0, "cr1": 0, "naive": 0}
    for run in range(runs):
        values, videos = _clustered_yes_no(rng, videos=100, per_video=8, truth=truth)
        boot = stats.cluster_bootstrap_mean(values, videos, resamples=500, seed=run)
        covered["bootstrap"] += boot.low <= truth <= boot.high
        covered["cr1"] += abs(values.mean() - truth) <= 1.96 * stats.cluster_robust_stderr(values, videos)
        covered["naive"] += abs(values.mean() - truth) <= 1.96 * stats.cluster_robust_stderr(values, None)
    rates = {k: v / runs for k, v in covered.items()}
    assert 0.93 <= rates["bootstrap"] <= 0.97, rates
    assert 0.93 <= rates["cr1"] <= 0.97, rates
    assert rates["naive"] < 0.90, rates


def test_all_items_at_a_bound_get_the_clopper_pearson_bound_over_clusters():
    """0/90 correct on 45 videos: the bootstrap has nothing to resample; the exact binomial bound with
    one trial per video is 1 - 0.025 ** (1 / 45) = 7.87%, and the display does not claim ``±``."""
    videos = [k // 2 for k in range(90)]
    none_right = stats.cluster_bootstrap_mean([0.0] * 90, videos, bounds=(0.0, 100.0))
    assert (none_right.low, none_right.n, none_right.clusters) == (0.0, 90, 45)
    assert none_right.high == pytest.approx(100 * (1 - 0.025 ** (1 / 45)))
    assert none_right.short(2) == "0.00 (0.00-7.87)" and "Clopper-Pearson" in none_right.method
    all_right = stats.cluster_bootstrap_mean([100.0] * 90, videos, bounds=(0.0, 100.0))
    assert (all_right.low, all_right.high) == pytest.approx((100 - none_right.high, 100.0))
    # without bounds (or away from them) the bootstrap is used as before
    assert stats.cluster_bootstrap_mean([0.0] * 90, videos).high == 0.0
    assert stats.cluster_bootstrap_mean([0.0, 100.0] * 45, bounds=(0.0, 100.0)).short(1).startswith("50.0 ± ")


def test_lopsided_intervals_are_shown_as_ranges_not_plus_minus():
    """5.6 with 95% CI 0.0-16.7 written as 5.6 ± 8.3 would claim values below 0."""
    assert stats.Interval(5.56, 0.0, 16.67, 18, 9, "m").short(2) == "5.56 (0.00-16.67)"
    assert stats.Interval(69.7, 68.9, 70.5, 13157, 1970, "m").short(1) == "69.7 ± 0.8"
    assert stats.Interval(60.0, 52.3, 67.7, 90, 60, "m").short(1) == "60.0 ± 7.7"
