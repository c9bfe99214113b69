"""The forecasting network: normalisation inside the model → Flatten → Dense relu → Dense relu → Dense 1.

Design choices beyond the seed's frame, each measured (README, "Model choices"):

* the network predicts the 30-minute *change* from the last glucose reading, rescaled by the
  training set's change spread, and adds the last reading back inside the model (so the exported
  model still maps raw mg/dL, U and g to mg/dL);
* early stopping on the validation split restores the best epoch; ``epochs`` is the maximum;
* a small L2 penalty on the dense kernels.

The four tuned hyperparameters keep their meaning: learning_rate (Adam), dense1, dense2, epochs.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import Hyperparameters, SeriesSpec

if TYPE_CHECKING:
    import keras

    from pipeline.dataset import PatientDataset

log = logging.getLogger(__name__)
L2 = 1e-4
PATIENCE = 8
BATCH_SIZE = 32


def _keras():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _layers():
    keras = _keras()

    @keras.saving.register_keras_serializable(package="glucose_forecast")
    class LastValue(keras.layers.Layer):
        """The newest value of one feature: x[:, -1, index:index+1]."""

        def __init__(self, index: int = 0, **kwargs):
            super().__init__(**kwargs)
            self.index = index

        def call(self, x):
            return x[:, -1, self.index : self.index + 1]

        def get_config(self):
            return {**super().get_config(), "index": self.index}

    return LastValue


def build_model(hp: Hyperparameters, X_train: np.ndarray, y_train: np.ndarray, spec: SeriesSpec) -> keras.Model:
    """Compile the network; normalisation statistics come from the training windows only."""
    keras = _keras()
    LastValue = _layers()
    gi = spec.features.index("glucose")
    inputs = keras.Input(shape=(spec.window, len(spec.features)), name="window", dtype="float32")
    norm = keras.layers.Normalization(axis=-1, name="normalise")
    norm.adapt(X_train)
    x = keras.layers.Flatten(name="flatten")(norm(inputs))
    reg = keras.regularizers.L2(L2)
    x = keras.layers.Dense(hp.dense1, activation="relu", kernel_regularizer=reg, name="dense1")(x)
    x = keras.layers.Dense(hp.dense2, activation="relu", kernel_regularizer=reg, name="dense2")(x)
    delta = keras.layers.Dense(1, name="delta")(x)
    change = y_train - X_train[:, -1, gi]
    scale = float(np.std(change)) or 1.0
    delta = keras.layers.Rescaling(scale=scale, offset=float(np.mean(change)), name="delta_mgdl")(delta)
    last = LastValue(gi, name="last_glucose")(inputs)
    outputs = keras.layers.Add(name="glucose")([last, delta])
    model = keras.Model(inputs, outputs, name="glucose_forecast")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=hp.learning_rate), loss="mse", metrics=["mae"])
    return model


def train_model(ds: PatientDataset, hp: Hyperparameters, spec: SeriesSpec, *, verbose: int = 0) -> tuple[keras.Model, dict]:
    """Train with early stopping on validation; return the model and a small training log."""
    keras = _keras()
    keras.utils.set_random_seed(hp.seed)
    model = build_model(hp, ds.train.X, ds.train.y, spec)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)
    t0 = time.perf_counter()
    history = model.fit(
        ds.train.X,
        ds.train.y,
        validation_data=(ds.validation.X, ds.validation.y),
        epochs=hp.epochs,
        batch_size=BATCH_SIZE,
        shuffle=True,
        callbacks=[stop],
        verbose=verbose,
    )
    val_loss = history.history["val_loss"]
    info = {
        "epochs_run": len(val_loss),
        "best_epoch": int(np.argmin(val_loss)) + 1,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("%s: trained %d epochs (best %d) in %.1fs", ds.patient_id, info["epochs_run"], info["best_epoch"], info["train_seconds"])
    return model, info


def predict(model: keras.Model, X: np.ndarray) -> np.ndarray:
    return model.predict(X, batch_size=4096, verbose=0).reshape(-1)


def load_keras_model(path: str):
    """Load a model saved with ``model.save(path)`` (used between KFP steps)."""
    keras = _keras()
    _layers()
    return keras.saving.load_model(path)
