"""glucose-forecast: the importable core (config, readers, windows, model, metrics, export, CLI).

The data layer (config, readers, series, windows, baselines, metrics) never imports TensorFlow;
`pipeline.model` and `pipeline.export` do, lazily, when called.
"""

__version__ = "0.1.0"
