"""The Streamlit web app: a patient uploads recent data and sees a 30-minute glucose forecast.

Data flows one way: uploaded file → validation (``webapp.validation``, on top of the core readers
and windows) → requests to the patient's model through the gateway (``webapp.client``) → results,
plot and downloads (``webapp.results``) → the page (``webapp/app.py``). Nothing here imports
TensorFlow.
"""

GATEWAY_ENV = "GLUCOSE_GATEWAY_URL"  # base URL of the gateway (nginx locally, the Ingress in a cluster)
TIMEOUT_ENV = "GLUCOSE_WEBAPP_TIMEOUT"  # seconds per request
CHUNK_ENV = "GLUCOSE_WEBAPP_CHUNK"  # forecast windows per request
