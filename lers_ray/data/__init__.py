"""Implicit-feedback datasets: parsing, splitting, caching and downloading.

``load_dataset(DatasetConfig(name="gowalla"))`` returns an :class:`InteractionData` with
disjoint train, validation and test pairs and the split's fingerprint.
"""

from __future__ import annotations

from lers_ray.data.dataset import InteractionData
from lers_ray.data.formats import DataFormatError
from lers_ray.data.loader import load_dataset

__all__ = ["DataFormatError", "InteractionData", "load_dataset"]
