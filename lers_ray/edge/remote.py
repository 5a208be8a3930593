"""The Ray task that measures an artifact on the node it lands on.

The driver passes the artifact's and the graph's bytes as object refs, so Ray ships them
through its object store. The task writes them to a temporary folder and measures them in a
fresh Python process with :func:`lers_ray.edge.bench.run_isolated`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray

from lers_ray.edge.options import BenchOptions


def measure_on_node(
    model_bytes: bytes, graph_bytes: bytes, options: dict[str, int], timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Measure the artifact given as bytes; return :func:`~lers_ray.edge.bench.measure`'s
    result with the Ray node's id and address added to the tags.

    Raises:
        BenchError: when the measuring process fails or runs past ``timeout_s``.
    """
    from lers_ray.edge.bench import run_isolated

    with tempfile.TemporaryDirectory(prefix="lers-edge-") as folder:
        model_path = Path(folder) / "artifact.lers"
        graph_path = Path(folder) / "graph.lers"
        model_path.write_bytes(model_bytes)
        graph_path.write_bytes(graph_bytes)
        result = run_isolated(model_path, graph_path, BenchOptions(**options), timeout_s)
    context = ray.get_runtime_context()
    result["tags"]["edge.node_id"] = context.get_node_id()
    result["tags"]["edge.node_ip"] = ray.util.get_node_ip_address()
    return result


measure_remote = ray.remote(max_retries=0)(measure_on_node)
"""``measure_on_node`` as a Ray task. The caller sets its resources with ``.options``."""
