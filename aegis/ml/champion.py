"""Champion/challenger: when a retrained model may replace the live one, and when to retrain.

Pure functions of metrics, counts and the clock, so the rules are tested without a database.

Promotion is judged on the most recent held-out window, challenger and champion scored on the
same rows. Per-trade mean net return is the yardstick (the brain trades every prediction above
the threshold, each sized from equity, so per-trade quality is what compounds). A challenger is
promoted only if, on that window, all of these hold:

1. it takes at least ``min_trades`` trades (fewer is anecdote, not evidence);
2. its taken trades make money net of fees (mean > 0) — a losing model is never promoted;
3. that mean is significant: t-statistic >= ``min_t_stat`` (noise can select a lucky subset;
   with t >= 2 pure noise passes about 2% of the time);
4. it beats the champion's mean on the same window by more than ``min_improvement_pct`` or, with
   no champion (or a champion that takes fewer than ``min_trades`` there), beats the rule-only
   baseline: the mean of taking every candidate.

Otherwise it is kept as a challenger. The champion may have been trained on part of today's
window; that favours the champion, so the comparison errs towards not swapping.
"""

from __future__ import annotations

from dataclasses import dataclass

from aegis.ml.validation import ValidationMetrics


@dataclass(frozen=True)
class PromotionPolicy:
    min_trades: int = 30
    min_t_stat: float = 2.0
    min_improvement_pct: float = 0.0


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    challenger: ValidationMetrics,
    champion: ValidationMetrics | None,
    policy: PromotionPolicy | None = None,
) -> PromotionDecision:
    """Decide whether ``challenger`` replaces ``champion`` (both scored on the same window)."""
    policy = policy or PromotionPolicy()
    c = challenger
    if c.n_taken < policy.min_trades:
        return PromotionDecision(
            False, f"{c.n_taken} held-out trades < minimum {policy.min_trades}"
        )
    if not c.mean_net_taken > 0.0:
        return PromotionDecision(False, f"loses money net of fees (mean {c.mean_net_taken:+.4f}%)")
    if not c.t_stat_taken >= policy.min_t_stat:
        return PromotionDecision(
            False, f"edge not significant (t {c.t_stat_taken:.2f} < {policy.min_t_stat})"
        )
    if champion is not None and champion.n_taken >= policy.min_trades:
        bar = champion.mean_net_taken + policy.min_improvement_pct
        if c.mean_net_taken > bar:
            return PromotionDecision(
                True,
                f"beats champion: mean {c.mean_net_taken:+.4f}% vs {champion.mean_net_taken:+.4f}%"
                f" over {c.n_taken} trades",
            )
        return PromotionDecision(
            False,
            f"does not beat champion: mean {c.mean_net_taken:+.4f}% vs {champion.mean_net_taken:+.4f}%",
        )
    if c.mean_net_taken > c.mean_net_all + policy.min_improvement_pct:
        return PromotionDecision(
            True,
            f"beats rule-only baseline: mean {c.mean_net_taken:+.4f}% vs {c.mean_net_all:+.4f}%"
            f" over {c.n_taken} trades",
        )
    return PromotionDecision(
        False,
        f"does not beat rule-only baseline ({c.mean_net_taken:+.4f}% vs {c.mean_net_all:+.4f}%)",
    )


@dataclass(frozen=True)
class RetrainPolicy:
    min_new_rows: int = 500  # Settings.retrain_min_rows
    interval_s: float = 3600.0  # Settings.retrain_interval_s
    min_total_rows: int = 200  # below this there is nothing worth fitting


@dataclass(frozen=True)
class RetrainDecision:
    due: bool
    reason: str


def retrain_due(
    new_labelled_rows: int,
    total_labelled_rows: int,
    last_trained_at_s: float | None,
    now_s: float,
    policy: RetrainPolicy | None = None,
) -> RetrainDecision:
    """Decide whether to start a training run now.

    Due when enough rows exist and either ``min_new_rows`` labelled rows arrived since the last
    run, or ``interval_s`` elapsed since it (with at least one new row: retraining on the same
    rows gives the same deterministic model). Never trained before counts as due.
    """
    policy = policy or RetrainPolicy()
    if total_labelled_rows < policy.min_total_rows:
        return RetrainDecision(
            False, f"{total_labelled_rows} rows < minimum {policy.min_total_rows}"
        )
    if last_trained_at_s is None:
        return RetrainDecision(True, "never trained")
    if new_labelled_rows >= policy.min_new_rows:
        return RetrainDecision(True, f"{new_labelled_rows} new labelled rows")
    elapsed = now_s - last_trained_at_s
    if elapsed >= policy.interval_s and new_labelled_rows > 0:
        return RetrainDecision(True, f"{elapsed:.0f} s since last training")
    return RetrainDecision(False, "not yet")
