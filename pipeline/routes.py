"""The public URL space of the gateway: one definition for nginx, the Ingress and the HTTPRoute.

Per patient ``p`` the gateway exposes exactly these paths and rewrites each to the same path
without the ``/<p>`` prefix on p's model server:

* ``/<p>/v1/models/<p>:predict``   (POST, the forecast)
* ``/<p>/v1/models/<p>/metadata``  (GET, signature; the web app reads the version from status)
* ``/<p>/v1/models/<p>``           (GET, model status)

Everything else is 404 at the gateway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.config import validate_patient_id

# Suffixes after /v1/models/<p> that are public. "" is the status endpoint.
PUBLIC_SUFFIXES = (":predict", "/metadata", "")


@dataclass(frozen=True)
class Route:
    patient: str
    public_path: str  # what clients call
    upstream_path: str  # what the model server receives


def routes(patient: str) -> list[Route]:
    """The exact public paths of one patient, with their upstream rewrite."""
    validate_patient_id(patient)
    return [
        Route(patient, f"/{patient}/v1/models/{patient}{s}", f"/v1/models/{patient}{s}") for s in PUBLIC_SUFFIXES
    ]


def path_regex(patient: str) -> str:
    """One anchored PCRE matching exactly the patient's public paths; group 1 is the upstream path.

    Used verbatim as the nginx ``location ~`` pattern and as the ingress-nginx path (with
    ``rewrite-target: $1``).
    """
    validate_patient_id(patient)
    alternatives = "|".join(re.escape(s) for s in PUBLIC_SUFFIXES if s)
    return f"^/{patient}(/v1/models/{patient}(?:{alternatives})?)$"


def upstream_for(path: str, patients: list[str]) -> str | None:
    """The upstream path a public path is rewritten to, or None if the gateway answers 404."""
    for p in patients:
        m = re.match(path_regex(p), path)
        if m:
            return m.group(1)
    return None
