"""Which patients the app offers, and whether each one's model is answering (with its version).

The list comes from the configuration (never hard-coded); each patient is checked through the
gateway with TF Serving's model-status endpoint ``GET /<p>/v1/models/<p>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import Config


def configured_patients(config: Config) -> list[str]:
    """The patient ids the system serves, in configuration order."""
    return list(config.patient_ids)


@dataclass(frozen=True)
class PatientStatus:
    """What the gateway says about one patient's model."""

    patient: str
    available: bool
    version: str | None = None  # the version TF Serving would answer with (highest AVAILABLE)
    message: str = ""  # for people: why it is not available

    @property
    def label(self) -> str:
        """One line for the patient picker."""
        if self.available:
            return f"{self.patient} · model v{self.version} ready"
        return f"{self.patient} · unavailable"


def version_from_status(payload: object) -> str | None:
    """The highest AVAILABLE version in a TF Serving status answer, or None.

    TF Serving answers ``{"model_version_status": [{"version": "3", "state": "AVAILABLE",
    "status": {"error_code": "OK", "error_message": ""}}, ...]}``.
    """
    if not isinstance(payload, dict):
        return None
    entries = payload.get("model_version_status")
    if not isinstance(entries, list):
        return None
    versions: list[int] = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("state") == "AVAILABLE":
            try:
                versions.append(int(entry.get("version")))
            except (TypeError, ValueError):
                continue
    return str(max(versions)) if versions else None
