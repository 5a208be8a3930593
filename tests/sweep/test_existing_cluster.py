"""A sweep submitted with --address to a Ray head started by ``ray start`` on loopback."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

HEAD_IP = "127.0.0.2"


def test_sweep_on_existing_cluster(tmp_path, ray_head, small_spec, run_cli):
    address, env = ray_head.address, ray_head.env
    spec = small_spec(name="address_check")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    result = run_cli(
        ["sweep", str(spec_path), "--address", address, "--output-dir", str(tmp_path / "sweep")],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert len(results) == 4
    assert set(results["status"]) == {"completed"}
    # The trials ran on the cluster's node, not on a local cluster of the driver.
    assert set(results["node_ip"]) == {HEAD_IP}
