"""HTTP client for the patients' models behind the gateway (TF Serving REST contract).

* ``POST <gateway>/<p>/v1/models/<p>:predict`` with ``{"instances": X.tolist()}`` (X shape
  (n, window, features), feature order from the config) answers ``{"predictions": [v, ...]}``;
  errors come back as ``{"error": "..."}``.
* ``GET <gateway>/<p>/v1/models/<p>`` answers the model status (versions).

Paths come from :mod:`pipeline.routes` (one definition of the URL space). Every failure is raised
as :class:`ServingError` with a message written for the person using the app, and a ``kind``
(``down``, ``slow``, ``error``, ``bad_answer``) for code and tests.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import numpy as np
import requests

from pipeline.config import Config
from pipeline.routes import PUBLIC_SUFFIXES, routes
from webapp import CHUNK_ENV, GATEWAY_ENV, SERVER_ENV, TIMEOUT_ENV
from webapp.patients import PatientStatus, version_from_status

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 15.0  # seconds per request
DEFAULT_CHUNK = 500  # windows per request: about 200 kB of JSON, well under proxies' body limits


def gateway_url(config: Config) -> str:
    """Base URL of the gateway: ``$GLUCOSE_GATEWAY_URL`` or the local nginx gateway of the config."""
    url = os.environ.get(GATEWAY_ENV, "").strip() or f"http://127.0.0.1:{config.ports.gateway}"
    return url.rstrip("/")


def service(config: Config) -> tuple[str, bool]:
    """(base URL, direct) of the forecast service: ``$GLUCOSE_MODEL_SERVER_URL`` is one model
    server called directly (TF Serving's paths); otherwise the gateway (``gateway_url``)."""
    server = os.environ.get(SERVER_ENV, "").strip()
    return (server.rstrip("/"), True) if server else (gateway_url(config), False)


def _positive_env(name: str, default: float, kind: type = float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default
    if value <= 0:
        log.warning("ignoring %s=%r: must be positive", name, raw)
        return default
    return value


def request_timeout() -> float:
    """Seconds to wait for one answer (``$GLUCOSE_WEBAPP_TIMEOUT``, default 15)."""
    return float(_positive_env(TIMEOUT_ENV, DEFAULT_TIMEOUT))


def chunk_size() -> int:
    """Windows per request (``$GLUCOSE_WEBAPP_CHUNK``, default 500)."""
    return int(_positive_env(CHUNK_ENV, DEFAULT_CHUNK, int))


def public_path(patient: str, suffix: str, *, direct: bool = False) -> str:
    """The path of one of a patient's endpoints (``":predict"``, ``"/metadata"`` or ``""``): the
    gateway's public path, or (``direct``) the model server's own path it is rewritten to."""
    for s, route in zip(PUBLIC_SUFFIXES, routes(patient), strict=True):
        if s == suffix:
            return route.upstream_path if direct else route.public_path
    raise ValueError(f"no public endpoint with suffix {suffix!r}")


class ServingError(Exception):
    """The forecast could not be obtained; ``str(error)`` is meant to be shown to the patient."""

    def __init__(self, message: str, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # down | slow | error | bad_answer
        self.status = status


def _server_message(response: requests.Response) -> str:
    """The ``error`` field of a TF Serving error answer, else a short excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        # An HTML error page from a proxy says nothing useful to a patient.
        return "" if text.startswith("<") else text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:300]
    return ""


def _http_error(response: requests.Response, patient: str) -> ServingError:
    code = response.status_code
    detail = _server_message(response)
    detail_sentence = f" The server said: “{detail}”." if detail else ""
    if code == 404:
        msg = (
            f"The forecast service has no model for patient {patient} (HTTP 404). Check that you "
            f"picked the right patient id; if it is right, the model has not been deployed yet."
        )
    elif code == 413:
        msg = (
            "The forecast service refused a request as too large (HTTP 413). Ask the administrator "
            f"to lower {CHUNK_ENV} for the web app."
        )
    elif code == 400:
        msg = f"The forecast service rejected the data (HTTP 400).{detail_sentence}"
    elif code in (502, 503, 504):
        msg = (
            f"The forecast service for patient {patient} is temporarily unavailable (HTTP {code})."
            f"{detail_sentence} Nothing is wrong with your file; please try again in a few minutes."
        )
    else:
        msg = (
            f"The forecast service answered with an error (HTTP {code}).{detail_sentence} "
            "Nothing is wrong with your file; please try again later."
        )
    return ServingError(msg, "error", code)


class ForecastClient:
    """Talks to one gateway (or, ``direct``, one model server). One ``requests.Session``
    (kept-alive connections) per client."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, *, direct: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.direct = direct
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ForecastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, patient: str, suffix: str, **kwargs: object) -> requests.Response:
        url = self.base_url + public_path(patient, suffix, direct=self.direct)
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise ServingError(
                f"The forecast service at {self.base_url} did not answer within {self.timeout:g} seconds. "
                "It may be busy; please try again in a moment.",
                "slow",
            ) from exc
        except requests.ConnectionError as exc:
            raise ServingError(
                f"The forecast service at {self.base_url} cannot be reached: it may be down, or the "
                f"address may be wrong (set {SERVER_ENV if self.direct else GATEWAY_ENV}). Nothing was sent.",
                "down",
            ) from exc
        except requests.RequestException as exc:  # invalid URL and the like
            raise ServingError(f"Could not contact the forecast service at {self.base_url}: {exc}", "down") from exc

    def status(self, patient: str) -> PatientStatus:
        """Whether the patient's model answers, and with which version. Never raises."""
        try:
            response = self._request("GET", patient, "")
        except ServingError as exc:
            return PatientStatus(patient, False, None, str(exc))
        if response.status_code != 200:
            return PatientStatus(patient, False, None, str(_http_error(response, patient)))
        try:
            version = version_from_status(response.json())
        except ValueError:
            version = None
        if version is None:
            return PatientStatus(patient, False, None, f"The model of patient {patient} is loading or failed to load.")
        return PatientStatus(patient, True, version, "")

    def predict(self, patient: str, X: np.ndarray) -> np.ndarray:
        """Forecasts for the windows ``X`` (n, window, features) in one request; float64 array (n,)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 3:
            raise ValueError(f"windows must have shape (n, window, features), got {X.shape}")
        body = json.dumps({"instances": X.tolist()})
        response = self._request(
            "POST", patient, ":predict", data=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code != 200:
            raise _http_error(response, patient)
        try:
            payload = response.json()
            predictions = np.asarray(payload["predictions"], dtype=np.float64).reshape(-1)
        except (ValueError, KeyError, TypeError) as exc:
            raise ServingError(
                "The forecast service answered, but not with forecasts (unexpected answer format). "
                "Please report this to the administrator.",
                "bad_answer",
                response.status_code,
            ) from exc
        if predictions.shape[0] != X.shape[0]:
            raise ServingError(
                f"The forecast service returned {predictions.shape[0]} forecasts for {X.shape[0]} windows. "
                "Please report this to the administrator.",
                "bad_answer",
                response.status_code,
            )
        if not np.all(np.isfinite(predictions)):
            raise ServingError(
                "The forecast service returned values that are not numbers. Please report this to the administrator.",
                "bad_answer",
                response.status_code,
            )
        return predictions

    def predict_chunks(
        self,
        patient: str,
        X: np.ndarray,
        chunk: int = DEFAULT_CHUNK,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Forecasts for many windows, one request per ``chunk`` windows; ``progress(done, total)``."""
        n = int(X.shape[0])
        out = np.empty(n, dtype=np.float64)
        if progress:
            progress(0, n)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            out[start:stop] = self.predict(patient, X[start:stop])
            if progress:
                progress(stop, n)
        return out
