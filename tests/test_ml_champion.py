"""Champion/challenger promotion rules and the retrain trigger."""

from __future__ import annotations

from aegis.ml.champion import (
    PromotionPolicy,
    RetrainPolicy,
    decide_promotion,
    retrain_due,
)
from aegis.ml.validation import ValidationMetrics

POLICY = PromotionPolicy(min_trades=30, min_t_stat=2.0)


def metrics(n_taken=100, mean_taken=0.3, mean_all=-0.1, t_stat=3.0):
    return ValidationMetrics(
        threshold_pct=0.05,
        n_candidates=500,
        n_taken=n_taken,
        mean_net_all=mean_all,
        mean_net_taken=mean_taken,
        sum_net_taken=mean_taken * n_taken,
        std_net_taken=1.0,
        t_stat_taken=t_stat,
        hit_rate_all=0.4,
        hit_rate_taken=0.55,
        spearman=0.2,
    )


def test_promotion_no_champion_beating_baseline_promotes():
    d = decide_promotion(metrics(), None, POLICY)
    assert d.promote and "baseline" in d.reason


def test_promotion_no_champion_not_beating_baseline_stays_challenger():
    d = decide_promotion(metrics(mean_taken=0.2, mean_all=0.25), None, POLICY)
    assert not d.promote and "baseline" in d.reason


def test_promotion_too_few_trades_stays_challenger():
    d = decide_promotion(metrics(n_taken=29, mean_taken=2.0, t_stat=9.0), None, POLICY)
    assert not d.promote and "minimum" in d.reason


def test_promotion_losing_model_never_promoted_even_over_worse_champion():
    d = decide_promotion(metrics(mean_taken=-0.05, mean_all=-0.3), metrics(mean_taken=-0.2), POLICY)
    assert not d.promote and "loses money" in d.reason


def test_promotion_insignificant_edge_stays_challenger():
    d = decide_promotion(metrics(t_stat=1.2), None, POLICY)
    assert not d.promote and "significant" in d.reason


def test_promotion_beats_champion_on_same_window_promotes():
    d = decide_promotion(metrics(mean_taken=0.35), metrics(mean_taken=0.3), POLICY)
    assert d.promote and "champion" in d.reason


def test_promotion_worse_than_champion_stays_challenger():
    d = decide_promotion(metrics(mean_taken=0.25), metrics(mean_taken=0.3), POLICY)
    assert not d.promote and "does not beat champion" in d.reason


def test_promotion_champion_silent_on_window_falls_back_to_baseline():
    d = decide_promotion(metrics(), metrics(n_taken=3, mean_taken=1.0), POLICY)
    assert d.promote and "baseline" in d.reason


def test_promotion_margin_is_respected():
    policy = PromotionPolicy(min_trades=30, min_t_stat=2.0, min_improvement_pct=0.1)
    assert not decide_promotion(metrics(mean_taken=0.35), metrics(mean_taken=0.3), policy).promote
    assert decide_promotion(metrics(mean_taken=0.45), metrics(mean_taken=0.3), policy).promote


def test_retrain_never_trained_with_enough_rows_is_due():
    assert retrain_due(0, 500, None, 1000.0, RetrainPolicy(min_total_rows=200)).due


def test_retrain_too_few_rows_is_not_due():
    d = retrain_due(150, 150, None, 1000.0, RetrainPolicy(min_total_rows=200))
    assert not d.due and "minimum" in d.reason


def test_retrain_enough_new_rows_is_due():
    policy = RetrainPolicy(min_new_rows=500, interval_s=3600)
    assert retrain_due(500, 5000, 1000.0, 1001.0, policy).due
    assert not retrain_due(499, 5000, 1000.0, 1001.0, policy).due


def test_retrain_elapsed_time_is_due_only_with_new_rows():
    policy = RetrainPolicy(min_new_rows=500, interval_s=3600)
    assert retrain_due(1, 5000, 1000.0, 4600.0, policy).due
    assert not retrain_due(0, 5000, 1000.0, 9999.0, policy).due
    assert not retrain_due(10, 5000, 1000.0, 4599.0, policy).due
