"""BehaviourModel: how unusual an account's behaviour is against the learned population.

A river :class:`~river.anomaly.HalfSpaceTrees` forest over the fixed-scaled feature vector of
:mod:`consumers.core.features`, plus a running histogram of the scores it gave to the accounts it
learned from, so that a raw score becomes a *quantile* ("more anomalous than 99.5% of the
population") — thresholds on quantiles mean the same thing whatever the traffic mix.

Poisoning guard: the caller decides who may teach the model (by default only accounts at least
``learn_min_age_days`` old, each at most once per ``learn_every_ms`` of event time), so thousands
of fresh campaign accounts cannot make themselves the norm. The model never reads the wall clock
and its randomness comes from ``seed``.

>>> from consumers.core.models.behaviour import BehaviourModel
>>> m = BehaviourModel(n_features=2, seed=1, window_size=20, n_trees=5, height=4)
>>> for i in range(200):
...     m.learn_one([0.1 + (i % 7) / 100, 0.2 + (i % 5) / 100])
>>> m.quantile_one([0.12, 0.22]) < m.quantile_one([0.95, 0.99])
True
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable

_BINS = 200


class BehaviourModel:
    """HalfSpaceTrees scores turned into population quantiles."""

    def __init__(self, n_features: int, seed: int = 42, n_trees: int = 15, height: int = 8,
                 window_size: int = 250):
        from river import anomaly  # imported here: river (and scipy) cost ~1 s of start-up

        self.n_features = n_features
        limits: dict[Hashable, tuple[float, float]] = {i: (0.0, 1.0) for i in range(n_features)}
        self.hst = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, limits=limits, seed=seed
        )
        self.hist = [0] * _BINS  # scores of learned points
        self.cum: list[int] | None = None
        self.n_learned = 0

    @staticmethod
    def _x(v: list[float]) -> dict[int, float]:
        return dict(enumerate(v))

    def learn_one(self, v: list[float], score: float | None = None) -> None:
        """Teach the model one account's feature vector (each value in [0, 1]). ``score``: its
        :meth:`score_one` under the model as it is now, when the caller has it (saves a walk of
        every tree; :meth:`scored_quantile` returns it)."""
        x = self._x(v)
        s = self.hst.score_one(x) if score is None else score
        self.hist[min(int(s * _BINS), _BINS - 1)] += 1
        self.cum = None
        self.hst.learn_one(x)
        self.n_learned += 1

    def score_one(self, v: list[float]) -> float:
        """Raw HalfSpaceTrees anomaly score in [0, 1] (higher is more anomalous)."""
        return self.hst.score_one(self._x(v))

    def quantile_one(self, v: list[float]) -> float:
        """Share of learned accounts whose score was lower than this vector's (0 until trained)."""
        return self.scored_quantile(v)[1]

    def scored_quantile(self, v: list[float]) -> tuple[float | None, float]:
        """``(score, quantile)``: :meth:`quantile_one` and the :meth:`score_one` it took (None until
        trained, when no score is needed)."""
        if self.n_learned < 50:
            return None, 0.0
        if self.cum is None:
            c, acc = [], 0
            for h in self.hist:
                acc += h
                c.append(acc)
            self.cum = c
        score = self.score_one(v)
        b = min(int(score * _BINS), _BINS - 1)
        below = self.cum[b - 1] if b > 0 else 0
        return score, below / self.n_learned

    # -- changelog -----------------------------------------------------------------------------
    def dumps(self) -> bytes:
        return pickle.dumps((self.n_features, self.hst, self.hist, self.n_learned), protocol=5)

    @classmethod
    def loads(cls, b: bytes) -> BehaviourModel:
        n_features, hst, hist, n_learned = pickle.loads(b)  # noqa: S301 - our own changelog
        m = cls.__new__(cls)
        m.n_features, m.hst, m.hist, m.n_learned, m.cum = n_features, hst, hist, n_learned, None
        return m


__all__ = ["BehaviourModel"]
