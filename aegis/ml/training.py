"""The training job: experience rows from PostgreSQL → walk-forward model → promotion decision → ml_models.

Runs synchronously (``train_from_database``, used by ``aegis-kernel train``) or in its own
spawned process (``TrainingJob``), so the brain's decision loop never waits for LightGBM. The
model stored is exactly the one scored on the most recent held-out window (it never saw that
window), so its stored metrics are honest; the newest window's rows are learned by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field

from aegis.ml.champion import (
    PromotionDecision,
    PromotionPolicy,
    RetrainDecision,
    RetrainPolicy,
    decide_promotion,
    retrain_due,
)
from aegis.ml.labels import TIMEFRAME_MS
from aegis.ml.model import ModelError, ModelParams, ReturnModel, feature_list_hash
from aegis.ml.repository import (
    ExperienceRows,
    StoredModel,
    count_new_experience,
    last_training,
    load_champion,
    load_experience,
    store_model,
)
from aegis.ml.validation import (
    ValidationError,
    ValidationMetrics,
    WalkForwardResult,
    selection_metrics,
    walk_forward_evaluate,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingParams:
    """What one training run needs; ``feature_names`` is ``aegis.features.FEATURE_NAMES``."""

    feature_names: tuple[str, ...]
    decision_timeframe: str = "5m"
    threshold_pct: float = 0.05
    max_hold_minutes: int = 240
    n_folds: int = 4
    embargo_ms: int = 3_600_000  # acts only in purged k-fold; walk-forward relies on the purge
    min_rows: int = 200
    max_rows: int = 200_000
    model: ModelParams = field(default_factory=ModelParams)
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy)

    def __post_init__(self) -> None:
        if self.decision_timeframe not in TIMEFRAME_MS:
            raise ValueError(f"unknown decision timeframe {self.decision_timeframe!r}")
        if not self.feature_names:
            raise ValueError("feature_names must not be empty")

    @classmethod
    def from_settings(
        cls, settings: object, feature_names: tuple[str, ...], **overrides
    ) -> TrainingParams:
        """Build from ``aegis.config.Settings`` (timeframe, threshold, time exit)."""
        values = dict(
            feature_names=tuple(feature_names),
            decision_timeframe=settings.decision_timeframe,
            threshold_pct=settings.entry_threshold_pct,
            max_hold_minutes=settings.max_hold_minutes,
            n_folds=settings.train_folds,
            promotion=PromotionPolicy(
                min_trades=settings.promotion_min_trades,
                min_t_stat=settings.promotion_min_t_stat,
            ),
        )
        values.update(overrides)
        return cls(**values)

    @property
    def feature_hash(self) -> str:
        return feature_list_hash(self.feature_names)


@dataclass(frozen=True)
class TrainingReport:
    """Outcome of one run. ``status``: champion, challenger, skipped (too little data) or failed."""

    status: str
    reason: str
    model_version: int | None
    rows: int
    feature_list_hash: str
    holdout: dict | None
    champion_holdout: dict | None
    previous_champion: int | None
    duration_s: float

    @property
    def promoted(self) -> bool:
        return self.status == "champion"

    @classmethod
    def failed(cls, reason: str, feature_list_hash: str = "") -> TrainingReport:
        return cls("failed", reason, None, 0, feature_list_hash, None, None, None, 0.0)


@dataclass(frozen=True)
class Evaluation:
    result: WalkForwardResult
    challenger: ValidationMetrics
    champion: ValidationMetrics | None
    decision: PromotionDecision


def evaluate_challenger(
    rows: ExperienceRows, params: TrainingParams, champion: StoredModel | None
) -> Evaluation:
    """Walk-forward train, then score challenger and champion on the same newest window."""
    result = walk_forward_evaluate(
        rows.features,
        rows.label,
        rows.decision_time_ms,
        rows.horizon_end_ms,
        params.feature_names,
        params.threshold_pct,
        params.model,
        params.n_folds,
        params.embargo_ms,
        rows.weight,
    )
    champion_metrics = None
    if champion is not None and champion.feature_list_hash == params.feature_hash:
        try:
            model = ReturnModel.from_bytes(champion.model, params.feature_hash)
        except ModelError as exc:
            log.error(
                "champion %d cannot be loaded, judged as absent: %s", champion.model_version, exc
            )
        else:
            hold = result.holdout_index
            pred = model.predict(rows.features[hold])
            champion_metrics = selection_metrics(pred, rows.label[hold], params.threshold_pct)
    decision = decide_promotion(result.holdout, champion_metrics, params.promotion)
    return Evaluation(result, result.holdout, champion_metrics, decision)


async def train_async(conn, params: TrainingParams, now_ms: int | None = None) -> TrainingReport:
    """Run one training on an open asyncpg connection; store the model and report."""
    started = time.perf_counter()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    rows = await load_experience(
        conn,
        params.decision_timeframe,
        len(params.feature_names),
        TIMEFRAME_MS[params.decision_timeframe],
        params.max_hold_minutes * 60_000,
        params.max_rows,
    )
    champion = await load_champion(conn)
    previous = None if champion is None else champion.model_version

    def report(status: str, reason: str, **kw) -> TrainingReport:
        out = TrainingReport(
            status=status,
            reason=reason,
            model_version=kw.get("version"),
            rows=len(rows),
            feature_list_hash=params.feature_hash,
            holdout=kw.get("holdout"),
            champion_holdout=kw.get("champion_holdout"),
            previous_champion=previous,
            duration_s=time.perf_counter() - started,
        )
        log.info(
            "training %s: model %s, %d rows, %s (%.1f s)",
            status, out.model_version, out.rows, reason, out.duration_s,
        )  # fmt: skip
        return out

    if len(rows) < params.min_rows:
        return report("skipped", f"{len(rows)} labelled rows < minimum {params.min_rows}")
    try:
        ev = evaluate_challenger(rows, params, champion)
    except (ModelError, ValidationError) as exc:
        return report("skipped", f"cannot train: {exc}")
    holdout = ev.challenger.to_dict()
    champ = None if ev.champion is None else ev.champion.to_dict()
    metrics = {
        "holdout": holdout,
        "champion_holdout": champ,
        "champion_version": previous,
        "pooled": ev.result.pooled.to_dict(),
        "folds": [
            {"window_start_ms": f.window_start_ms, "window_end_ms": f.window_end_ms,
             "n_train": f.n_train, **f.metrics.to_dict()}
            for f in ev.result.folds
        ],
        "decision": ev.decision.reason,
        "threshold_pct": params.threshold_pct,
        "decision_timeframe": params.decision_timeframe,
        "n_folds": params.n_folds,
        "embargo_ms": params.embargo_ms,
        "rows": len(rows),
        "rows_created_through_ms": rows.max_created_at_ms,
        "model_params": asdict(params.model),
    }  # fmt: skip
    version, status, note = await store_model(
        conn,
        model=ev.result.model.to_bytes(),
        feature_list_hash=params.feature_hash,
        feature_names=params.feature_names,
        train_start_ms=ev.result.train_start_ms,
        train_end_ms=ev.result.train_end_ms,
        train_rows=ev.result.folds[-1].n_train,
        metrics=metrics,
        promote=ev.decision.promote,
        expected_champion=previous,
        now_ms=now_ms,
    )
    reason = note or ev.decision.reason
    return report(status, reason, version=version, holdout=holdout, champion_holdout=champ)


async def retrain_decision(
    conn,
    params: TrainingParams,
    policy: RetrainPolicy,
    now_s: float | None = None,
    last_attempt_s: float | None = None,
) -> RetrainDecision:
    """Decide from the database whether a training run is due (two cheap count queries).

    "New" rows are those created after the newest row the last stored model saw, so rows that
    arrive while a run is in progress count for the next one. A run that stored nothing
    (skipped, failed) leaves no trace in the database: pass its start as ``last_attempt_s`` so
    a young buffer is not retrained on every poll (it is retried after ``min_new_rows`` rows
    in total or ``interval_s``).
    """
    now_s = time.time() if now_s is None else now_s
    last = await last_training(conn)
    created_through = 0 if last is None else last[1]
    new, total = await count_new_experience(conn, params.decision_timeframe, created_through)
    stamps = [
        t for t in (None if last is None else last[0] / 1000.0, last_attempt_s) if t is not None
    ]
    return retrain_due(new, total, max(stamps, default=None), now_s, policy)


async def _train_dsn(dsn: str, params: TrainingParams) -> TrainingReport:
    import asyncpg  # the job is an edge: it owns its connection

    conn = await asyncpg.connect(dsn)
    try:
        return await train_async(conn, params)
    finally:
        await conn.close()


def train_from_database(dsn: str, params: TrainingParams) -> TrainingReport:
    """Train once, synchronously, from the database at ``dsn`` (for ``aegis-kernel train``)."""
    return asyncio.run(_train_dsn(dsn, params))


def _job_main(dsn: str, params: TrainingParams, sender) -> None:
    # Spawned by the brain, the job inherits its CPU pin (``AEGIS_CPU_AFFINITY``): it must not
    # train on the brain's CPU alone, so it takes every CPU the OS lets it have.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        out = train_from_database(dsn, params)
    except Exception as exc:  # reported to the parent, which logs it; the child just ends
        out = TrainingReport.failed(f"{type(exc).__name__}: {exc}", params.feature_hash)
    sender.send(out)
    sender.close()


class TrainingJob:
    """One training run in a spawned child process; poll it from the decision loop.

    Spawn (not fork) gives the child a clean interpreter: no inherited event loop, pool, ring
    mapping or LightGBM thread state from the brain.
    """

    def __init__(self, dsn: str, params: TrainingParams) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._receiver, sender = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_job_main, args=(dsn, params, sender), name="aegis-train", daemon=True
        )
        self._process.start()
        sender.close()
        self._report: TrainingReport | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def poll(self) -> TrainingReport | None:
        """Return the report once the child has finished, else None; never blocks."""
        if self._report is None and self._receiver.poll():
            try:
                self._report = self._receiver.recv()
            except EOFError:
                self._report = TrainingReport.failed("training process died")
            self._process.join(timeout=5)
        elif self._report is None and not self._process.is_alive() and not self._receiver.poll():
            code = self._process.exitcode
            self._report = TrainingReport.failed(f"training process exited with code {code}")
        return self._report

    def wait(self, timeout: float | None = None) -> TrainingReport | None:
        """Block until the report arrives or ``timeout`` passes (tests, the CLI)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            self._receiver.poll(0.05)
        return self._report

    def terminate(self) -> None:
        """Stop the child (brain shutdown); it holds no state that could be lost mid-run."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
