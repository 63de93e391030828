"""Hot-swap of the champion model inside the brain, without restarting it.

``ModelRegistry.refresh`` polls one indexed row (version and feature hash of the champion), and
loads the model bytes only when the version changed. A champion trained on another feature list
than the brain computes is refused (logged once per version) and the brain keeps what it had.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from aegis.ml.model import ModelError, ReturnModel, feature_list_hash
from aegis.ml.repository import champion_version, load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveModel:
    """The champion in use: its version goes into every intent's ``model_version``."""

    version: int
    model: ReturnModel
    metrics: dict

    @property
    def win_probability(self) -> float:
        """Held-out hit rate of the trades this model takes: the ``p`` of Kelly sizing."""
        value = (self.metrics.get("holdout") or {}).get("hit_rate_taken")
        return float("nan") if value is None else float(value)

    @property
    def expected_return_pct(self) -> float:
        value = (self.metrics.get("holdout") or {}).get("mean_net_taken")
        return float("nan") if value is None else float(value)


class ModelRegistry:
    """Cache of the current champion for one feature list; call ``refresh`` every few seconds."""

    def __init__(self, feature_names: tuple[str, ...]) -> None:
        self._hash = feature_list_hash(feature_names)
        self._active: ActiveModel | None = None
        self._refused: int | None = None

    @property
    def active(self) -> ActiveModel | None:
        """The model to predict with; None means cold start (rule-only, minimum size)."""
        return self._active

    @property
    def version(self) -> int:
        """Model version for intents: 0 = rule-only."""
        return 0 if self._active is None else self._active.version

    async def refresh(self, conn) -> bool:
        """Poll the champion; load and swap it if it changed. Return True when swapped."""
        head = await champion_version(conn)
        if head is None:
            # A champion is never deleted by the training job; keep serving the one we have.
            return False
        version, fhash = head
        if self._active is not None and self._active.version == version:
            return False
        if version == self._refused:
            return False
        if fhash != self._hash:
            self._refuse(version, f"feature hash {fhash} != brain's {self._hash}")
            return False
        stored = await load_model(conn, version)
        if stored is None:  # retired and deleted between the two reads: next poll sees the new one
            return False
        try:
            model = ReturnModel.from_bytes(stored.model, self._hash)
        except ModelError as exc:
            self._refuse(version, str(exc))
            return False
        before = self.version
        self._active = ActiveModel(version=version, model=model, metrics=stored.metrics)
        p = self._active.win_probability
        log.info(
            "model champion %d in use (was %d), held-out hit rate %s",
            version, before, "n/a" if math.isnan(p) else f"{p:.3f}",
        )  # fmt: skip
        return True

    def _refuse(self, version: int, why: str) -> None:
        self._refused = version
        log.error("champion %d refused, keeping model %d: %s", version, self.version, why)
