"""Codecs: the compact storage form of each embedding table class in an edge artifact.

A codec names one compact storage form. The mapping is fixed here, so an artifact can only
ask for one of these decoders, never for an arbitrary module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from lers_ray.edge.container import ArtifactError
from lers_ray.embeddings.base import EmbeddingTable

CODECS: dict[str, tuple[str, str]] = {
    "dense": ("lers_ray.embeddings.full", "FullEmbedding"),
    "csr": ("lers_ray.embeddings.masked", "MaskedEmbedding"),
    "ptq": ("lers_ray.embeddings.ptq", "QuantizedEmbedding"),
    "qr": ("lers_ray.embeddings.qr", "QREmbedding"),
    "ttrec": ("lers_ray.embeddings.ttrec", "TTRecEmbedding"),
    "dhe": ("lers_ray.embeddings.dhe", "DHEmbedding"),
    "cerp": ("lers_ray.embeddings.cerp", "FixedCERPEmbedding"),
}
"""Codec name -> (module, class) whose ``decode_artifact`` rebuilds the table."""


def _table_class(codec: str) -> type[EmbeddingTable]:
    if codec not in CODECS:
        raise ArtifactError(
            f"unknown table codec {codec!r}; this lers_ray decodes {', '.join(CODECS)}. "
            "Upgrade lers_ray on the device to the version that exported the artifact"
        )
    module, name = CODECS[codec]
    table_class: type[EmbeddingTable] = getattr(importlib.import_module(module), name)
    return table_class


def codec_of(table: object) -> str:
    """Return the codec of a finished table (a trained or post-hoc model's table).

    Raises:
        ArtifactError: for a class with no codec, such as a search-stage supernet.
    """
    for codec in CODECS:
        if type(table) is _table_class(codec):
            return codec
    raise ArtifactError(
        f"{type(table).__name__} has no edge codec; only finished tables are exported "
        f"({', '.join(CODECS)})"
    )


def decoder(codec: str) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Return the function that rebuilds the dense float32 table of ``codec``."""
    return _table_class(codec).decode_artifact
