"""Serving: a TensorFlow-Serving-compatible REST model server, the nginx gateway and the images.

Modules (none imports TensorFlow at import time):

* ``modelconfig``  TF Serving ``models.config`` (``model_config_list`` text format): parse and write.
* ``repository``   version discovery, version policies, loading/unloading while serving.
* ``runtime``      a loaded SavedModel, its signatures and the micro-batcher.
* ``rest``         TF Serving's JSON request/response formats and error codes.
* ``app``          the ASGI application (routes, metrics, body limit, access log).
* ``server``       the process entry point (``python -m serving.server``), uvicorn.
* ``gateway``      the nginx gateway configuration, from ``pipeline.routes``.
* ``launch``       start servers / nginx as subprocesses; ``local_stack``.
* ``images``       ``docker build`` of each patient's serving image.
* ``bench``        the serving benchmark.
* ``commands``     the ``glucose-forecast`` subcommands.
"""
