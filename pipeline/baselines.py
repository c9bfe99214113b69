"""Baselines every model is judged beside, behind one small interface (fit / predict on windows)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from pipeline.windows import Windows


class Forecaster(ABC):
    name: str

    def fit(self, train: Windows) -> Forecaster:  # noqa: B027 - default: nothing to learn
        return self

    @abstractmethod
    def predict(self, X: np.ndarray, glucose_index: int = 0) -> np.ndarray: ...


class Persistence(Forecaster):
    """Glucose in 30 minutes equals glucose now."""

    name = "persistence"

    def predict(self, X, glucose_index=0):
        return X[:, -1, glucose_index].astype(float)


class LinearExtrapolation(Forecaster):
    """Extend the least-squares line through the last `points` real 15-minute-spaced readings."""

    name = "linear"

    def __init__(self, horizon: int = 6, lookback: int = 6) -> None:
        self.horizon, self.lookback = horizon, lookback

    def predict(self, X, glucose_index=0):
        g = X[:, -self.lookback :, glucose_index].astype(float)
        x = np.arange(self.lookback) - (self.lookback - 1)
        slope = ((x - x.mean()) * (g - g.mean(axis=1, keepdims=True))).sum(axis=1) / ((x - x.mean()) ** 2).sum()
        intercept = g.mean(axis=1) - slope * x.mean()
        return intercept + slope * self.horizon


class Ridge(Forecaster):
    """Ridge regression on the flattened, standardised window (alpha chosen on nothing but train)."""

    name = "ridge"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, train):
        from sklearn.linear_model import Ridge as SkRidge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), SkRidge(alpha=self.alpha))
        self.model.fit(train.X.reshape(len(train), -1), train.y)
        return self

    def predict(self, X, glucose_index=0):
        return self.model.predict(X.reshape(len(X), -1))


def baselines(horizon: int) -> list[Forecaster]:
    return [Persistence(), LinearExtrapolation(horizon=horizon), Ridge()]
