"""Edge deployment: compact model artifacts, a torch-only loader and latency measurement.

The modules a device needs (``container``, ``codecs``, ``loader``, ``bench``) import torch,
numpy and lers_ray's table decoders only; Ray, Optuna and MLflow are never imported by them.
``export`` (run where the model was trained) and ``remote`` (the Ray task) are not needed on
the device to load an artifact.
"""
