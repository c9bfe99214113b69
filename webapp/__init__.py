"""The Streamlit web app: a patient uploads recent data and sees a 30-minute glucose forecast.

Data flows one way: uploaded file → validation (``webapp.validation``, on top of the core readers
and windows) → requests to the patient's model through the gateway (``webapp.client``) → results,
plot and downloads (``webapp.results``) → the page (``webapp/app.py``). Nothing here imports
TensorFlow.
"""

GATEWAY_ENV = "GLUCOSE_GATEWAY_URL"  # base URL of the gateway (nginx locally, the Ingress in a cluster)
# Instead of a gateway, one model server called with TF Serving's own paths (/v1/models/<p>...):
# `make demo` without nginx, or a `kubectl port-forward` to one patient's Service.
SERVER_ENV = "GLUCOSE_MODEL_SERVER_URL"
TIMEOUT_ENV = "GLUCOSE_WEBAPP_TIMEOUT"  # seconds per request
CHUNK_ENV = "GLUCOSE_WEBAPP_CHUNK"  # forecast windows per request
