"""The forecasting network: normalisation inside the model → Flatten → Dense relu → Dense relu → Dense 1.

Design choices beyond the seed's frame, each measured (README, "Model choices"):

* the network predicts the 30-minute *change* from the last glucose reading, rescaled by the
  training set's change spread, and adds the last reading back inside the model (so the exported
  model still maps raw mg/dL, U and g to mg/dL);
* the output layer also sees the flattened, normalised window (a linear skip connection), and
  starts at the ridge regression solution with the hidden units' weights at zero (``ridge_init``):
  the untrained network is a linear model, and the hidden layers learn what it cannot;
* population pretraining: the network first learns from every configured patient's *training*
  split, then is fine-tuned on the patient's own (a per-patient model with a population prior;
  about 650 training windows per patient are too few for the network alone);
* early stopping on the validation split restores the best epoch; ``epochs`` is the maximum;
* an L2 penalty on the dense kernels.

The four tuned hyperparameters keep their meaning: learning_rate (Adam), dense1, dense2, epochs.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import Hyperparameters, SeriesSpec, TrainingSpec

if TYPE_CHECKING:
    import keras

    from pipeline.windows import Windows

log = logging.getLogger(__name__)


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


def build_model(
    hp: Hyperparameters, X_train: np.ndarray, y_train: np.ndarray, spec: SeriesSpec, training: TrainingSpec | None = None
) -> keras.Model:
    """Compile the network; normalisation and change statistics come from training windows only."""
    keras = _keras()
    LastValue = _layers()
    training = training or TrainingSpec()
    gi = spec.features.index("glucose")
    inputs = keras.Input(shape=(spec.window, len(spec.features)), name="window", dtype="float32")
    norm = keras.layers.Normalization(axis=-1, name="normalise")
    norm.adapt(X_train)
    flat = keras.layers.Flatten(name="flatten")(norm(inputs))
    reg = keras.regularizers.L2(training.l2)
    x = keras.layers.Dense(hp.dense1, activation="relu", kernel_regularizer=reg, name="dense1")(flat)
    x = keras.layers.Dense(hp.dense2, activation="relu", kernel_regularizer=reg, name="dense2")(x)
    x = keras.layers.Concatenate(name="skip")([flat, x])
    delta = keras.layers.Dense(1, kernel_regularizer=reg, name="delta")(x)
    change = y_train - X_train[:, -1, gi]
    scale = float(np.std(change)) or 1.0
    delta = keras.layers.Rescaling(scale=scale, offset=float(np.mean(change)), name="delta_mgdl")(delta)
    last = LastValue(gi, name="last_glucose")(inputs)
    outputs = keras.layers.Add(name="glucose")([last, delta])
    model = keras.Model(inputs, outputs, name="glucose_forecast")
    if training.ridge_init:
        anchor_at_ridge(model, X_train, y_train, training.ridge_alpha)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=hp.learning_rate), loss="mse", metrics=["mae"])
    return model


def anchor_at_ridge(model, X: np.ndarray, y: np.ndarray, alpha: float) -> None:
    """Set the output layer to ridge regression on the normalised window (closed form, windows ``X``
    and targets ``y``) and the hidden units' weights in it to zero: the untrained network predicts
    what ridge predicts, and training adds only what the hidden layers find beyond it."""
    gi = model.get_layer("last_glucose").index
    rescale = model.get_layer("delta_mgdl")
    target = ((y - X[:, -1, gi]) - float(rescale.offset)) / float(rescale.scale)
    flat = model.get_layer("flatten")(model.get_layer("normalise")(X)).numpy().astype(np.float64)
    mean = flat.mean(axis=0)
    centred = flat - mean
    k = flat.shape[1]
    w = np.linalg.solve(centred.T @ centred + alpha * np.eye(k), centred.T @ (target - target.mean()))
    layer = model.get_layer("delta")
    kernel, _ = layer.get_weights()
    kernel = np.zeros_like(kernel)
    kernel[:k, 0] = w
    layer.set_weights([kernel, np.array([target.mean() - mean @ w], dtype=kernel.dtype)])


def _fit(model, train: Windows, val: Windows, epochs: int, training: TrainingSpec, verbose: int) -> list[float]:
    keras = _keras()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=training.patience, restore_best_weights=True)
    history = model.fit(train.X, train.y, validation_data=(val.X, val.y), epochs=epochs,
                        batch_size=training.batch_size, shuffle=True, callbacks=[stop], verbose=verbose)
    return history.history["val_loss"]


def train_model(
    model: keras.Model,
    train: Windows,
    validation: Windows,
    hp: Hyperparameters,
    training: TrainingSpec | None = None,
    *,
    learning_rate: float | None = None,
    verbose: int = 0,
) -> dict:
    """Fit with early stopping on validation (restoring the best epoch); return a small training log."""
    keras = _keras()
    training = training or TrainingSpec()
    if learning_rate is not None:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", metrics=["mae"])
    t0 = time.perf_counter()
    val_loss = _fit(model, train, validation, hp.epochs, training, verbose)
    return {"epochs_run": len(val_loss), "best_epoch": int(np.argmin(val_loss)) + 1,
            "train_seconds": round(time.perf_counter() - t0, 2)}


def predict(model: keras.Model, X: np.ndarray) -> np.ndarray:
    """Forecasts (mg/dL) for windows ``X``, in eager calls of at most 4096 windows (unlike
    ``model.predict``, no tf.function is traced per model, so many models cause no retracing)."""
    keras = _keras()
    X = np.asarray(X, dtype=np.float32)
    parts = [keras.ops.convert_to_numpy(model(X[i : i + 4096], training=False)) for i in range(0, len(X), 4096)]
    return np.concatenate(parts).reshape(-1) if parts else np.zeros(0, dtype=np.float32)


def load_keras_model(path: str):
    """Load a model saved with ``model.save(path)`` (used between KFP steps)."""
    keras = _keras()
    _layers()
    return keras.saving.load_model(path)
