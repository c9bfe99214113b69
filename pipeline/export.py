"""Export: versioned, atomic SavedModels in TF Serving's layout with a metadata file beside them.

``models/<patient>/<version>/`` holds ``saved_model.pb``, ``variables/`` and ``glucose_forecast.json``.
A version is built in a hidden temporary directory next to its final place and renamed in one
step, so a server polling ``models/<patient>/`` never sees a half-written version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.signature import INPUT_NAME, METADATA_FILE, OUTPUT_NAME, SIGNATURE_NAME


def versions(models_dir: Path, patient_id: str) -> list[int]:
    d = Path(models_dir) / patient_id
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())


def latest_version(models_dir: Path, patient_id: str) -> int | None:
    v = versions(models_dir, patient_id)
    return v[-1] if v else None


def read_metadata(models_dir: Path, patient_id: str, version: int | None = None) -> dict[str, Any] | None:
    version = version or latest_version(models_dir, patient_id)
    if version is None:
        return None
    path = Path(models_dir) / patient_id / str(version) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_saved_model(model, path: Path, window: int, n_features: int) -> None:
    """Write the serving signature: input `window` (None, window, n_features) → output `glucose` (None,)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(window):
        return {OUTPUT_NAME: tf.reshape(model(window, training=False), [-1])}

    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec(shape=(None, window, n_features), dtype=tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def export_model(model, models_dir: Path, patient_id: str, metadata: dict[str, Any], *, window: int, n_features: int) -> Path:
    """Export the next version atomically and return its directory."""
    root = Path(models_dir) / patient_id
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=root))
    try:
        write_saved_model(model, tmp / "model", window, n_features)
        staged = tmp / "model"
        version = (latest_version(models_dir, patient_id) or 0) + 1
        meta = {**metadata, "patient": patient_id, "version": version}
        (staged / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        final = root / str(version)
        while True:
            try:
                os.rename(staged, final)  # atomic on one file system; fails if final exists
                break
            except OSError:
                version += 1
                final = root / str(version)
                meta["version"] = version
                (staged / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
