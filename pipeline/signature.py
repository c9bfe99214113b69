"""The serving contract of every exported SavedModel (no TensorFlow needed to read it).

Signature ``serving_default``: input ``window`` float32 of shape (None, window, n_features) in raw
units (glucose mg/dL, insulin U per 5-min step, carbs g per 5-min step; feature order from the
config), output ``glucose`` float32 of shape (None,): mg/dL at t + horizon.

TF Serving row format: ``{"instances": [[[g, i, c], ...15 rows], ...]}`` → ``{"predictions": [v, ...]}``.
"""

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "window"
OUTPUT_NAME = "glucose"
METADATA_FILE = "glucose_forecast.json"  # beside saved_model.pb in each version directory
