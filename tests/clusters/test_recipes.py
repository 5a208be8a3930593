"""The cluster recipes: the Ray cluster launcher config for AWS and the KubeRay manifest."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_CONFIG = REPO / "clusters" / "aws" / "cluster.yaml"
KUBERAY_MANIFEST = REPO / "clusters" / "kuberay" / "raycluster.yaml"
DOCKERFILE = REPO / "Dockerfile"
SHARED_PATH = "/mnt/lers"
"""Where every training node mounts the shared storage (sweep folders, data, MLflow store)."""


@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    return yaml.safe_load(LAUNCHER_CONFIG.read_text())


@pytest.fixture(scope="module")
def manifest() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(KUBERAY_MANIFEST.read_text()) if doc]


@pytest.fixture(scope="module")
def raycluster(manifest) -> dict[str, Any]:
    clusters = [doc for doc in manifest if doc.get("kind") == "RayCluster"]
    assert len(clusters) == 1, f"expected one RayCluster in {KUBERAY_MANIFEST}"
    return clusters[0]


def image_source_dir() -> str:
    """Return where the Dockerfile copies the build context (the `COPY . DEST` line)."""
    found = re.findall(r"^COPY\s+\.\s+(\S+)\s*$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert found, f"{DOCKERFILE} has no `COPY . DEST` line"
    return found[0]


def repo_path_of(image_path: str) -> Path:
    """Map a path inside the image's copy of the repository to the path in this checkout."""
    source = image_source_dir()
    assert image_path.startswith(source + "/"), f"{image_path} is not under {source}"
    return REPO / image_path.removeprefix(source + "/")


def image_repository(image: str) -> str:
    return image.rsplit(":", 1)[0]


def ray_start_commands(commands: list[str]) -> list[list[str]]:
    """Split each `ray start` command of a launcher command list into its arguments."""
    found = []
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"]:
                found.append(words)
    return found


def worker_groups(raycluster) -> dict[str, dict[str, Any]]:
    return {group["groupName"]: group for group in raycluster["spec"]["workerGroupSpecs"]}


def parse_kuberay_resources(value: str) -> dict[str, Any]:
    """Decode rayStartParams.resources: a JSON object in a quoted string, quotes escaped."""
    assert value.startswith('"'), f"not a quoted string: {value!r}"
    assert value.endswith('"'), f"not a quoted string: {value!r}"
    return json.loads(value[1:-1].replace('\\"', '"'))


# The launcher config (clusters/aws/cluster.yaml)


def test_launcher_config_passes_ray_schema(launcher):
    # The schema that `ray up` validates against, from the installed Ray: a misspelt or
    # misplaced key fails here.
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(launcher, json.loads(schema_path.read_text()))


def test_launcher_provider_is_aws(launcher):
    assert launcher["provider"]["type"] == "aws"
    assert launcher["provider"]["region"]
    assert launcher["auth"]["ssh_user"]


def test_launcher_head_type_has_no_trial_cpus(launcher):
    head = launcher["available_node_types"][launcher["head_node_type"]]
    assert head["resources"].get("CPU") == 0


def test_launcher_gpu_worker_type(launcher):
    head_type = launcher["head_node_type"]
    gpu_types = [
        node
        for name, node in launcher["available_node_types"].items()
        if name != head_type and node["resources"].get("GPU", 0) >= 1
    ]
    assert len(gpu_types) == 1
    assert gpu_types[0]["resources"].get("CPU", 0) >= 1
    assert gpu_types[0]["node_config"]["InstanceType"].startswith(("g", "p"))


def test_launcher_edge_type_advertises_edge_pi(launcher):
    edge = launcher["available_node_types"]["edge_arm64"]
    assert edge["resources"].get("edge_pi") == 1
    assert edge["resources"].get("CPU") == 0
    assert edge.get("min_workers", 0) == 0
    # A Graviton instance type: family letter, generation digit, then "g".
    assert re.match(r"^[a-z]+\d+g[a-z]*\.", edge["node_config"]["InstanceType"])
    assert edge["docker"]["worker_image"].endswith(":pi")


def test_launcher_edge_type_caps_object_store(launcher):
    edge_options = launcher["available_node_types"]["edge_arm64"]["docker"]["worker_run_options"]
    assert "-e LERS_OBJECT_STORE_MEMORY=268435456" in edge_options
    (worker_start,) = ray_start_commands(launcher["worker_start_ray_commands"])
    joined = " ".join(worker_start)
    assert "--object-store-memory=$LERS_OBJECT_STORE_MEMORY" in joined


def test_launcher_head_starts_ray_without_usage_stats(launcher):
    starts = ray_start_commands(launcher["head_start_ray_commands"])
    assert len(starts) == 1
    assert "--head" in starts[0]
    assert "--disable-usage-stats" in starts[0]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in starts[0]


def test_launcher_workers_start_ray_without_usage_stats(launcher):
    starts = ray_start_commands(launcher["worker_start_ray_commands"])
    assert len(starts) == 1
    assert "--address=$RAY_HEAD_IP:6379" in starts[0]
    assert "--disable-usage-stats" in starts[0]


def test_launcher_containers_disable_telemetry(launcher):
    options = launcher["docker"]["run_options"]
    assert "-e RAY_USAGE_STATS_ENABLED=0" in options
    assert "-e MLFLOW_DISABLE_TELEMETRY=true" in options


def test_launcher_mounts_shared_storage(launcher):
    assert f"-v {SHARED_PATH}:{SHARED_PATH}" in launcher["docker"]["run_options"]
    mounts = [cmd for cmd in launcher["initialization_commands"] if "mount -t nfs4" in cmd]
    assert len(mounts) == 1
    assert mounts[0].rstrip().endswith(f":/ {SHARED_PATH}")


def test_launcher_head_starts_mlflow(launcher):
    mlflow = [cmd for cmd in launcher["head_start_ray_commands"] if "start_mlflow.sh" in cmd]
    assert len(mlflow) == 1
    words = shlex.split(mlflow[0])
    script = next(word for word in words if word.endswith("start_mlflow.sh"))
    assert repo_path_of(script).is_file()
    store_dir = words[words.index("--dir") + 1]
    assert store_dir.startswith(SHARED_PATH + "/")


# The KubeRay manifest (clusters/kuberay/raycluster.yaml)


def test_kuberay_api_version_and_kind(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"


def test_kuberay_ray_version_is_installed_ray(raycluster):
    assert raycluster["spec"]["rayVersion"] == ray.__version__


def test_kuberay_start_params_are_strings(raycluster):
    groups = [raycluster["spec"]["headGroupSpec"], *raycluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        for key, value in group.get("rayStartParams", {}).items():
            assert isinstance(value, str), f"rayStartParams.{key} is {value!r}, not a string"


def test_kuberay_head_group(raycluster):
    head = raycluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    containers = head["template"]["spec"]["containers"]
    # KubeRay treats the first container as the Ray container.
    assert containers[0]["name"] == "ray-head"
    env = {item["name"]: item["value"] for item in containers[0]["env"]}
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_kuberay_head_runs_mlflow_sidecar(raycluster):
    containers = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    sidecars = [c for c in containers[1:] if any("start_mlflow.sh" in a for a in c["command"])]
    assert len(sidecars) == 1
    command = sidecars[0]["command"]
    script = next(word for word in command if word.endswith("start_mlflow.sh"))
    assert repo_path_of(script).is_file()
    assert "--foreground" in command
    assert command[command.index("--dir") + 1].startswith(SHARED_PATH + "/")
    mounts = {m["mountPath"] for m in sidecars[0]["volumeMounts"]}
    assert SHARED_PATH in mounts


def test_kuberay_gpu_group(raycluster):
    gpu_groups = [
        group
        for group in raycluster["spec"]["workerGroupSpecs"]
        if int(
            group["template"]["spec"]["containers"][0]["resources"]["limits"].get(
                "nvidia.com/gpu", 0
            )
        )
        >= 1
    ]
    assert len(gpu_groups) == 1
    container = gpu_groups[0]["template"]["spec"]["containers"][0]
    assert SHARED_PATH in {m["mountPath"] for m in container["volumeMounts"]}


def test_kuberay_edge_group(raycluster):
    edge = worker_groups(raycluster)["edge-pi"]
    spec = edge["template"]["spec"]
    assert spec["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    params = edge["rayStartParams"]
    assert params["num-cpus"] == "0"
    assert params["num-gpus"] == "0"
    assert parse_kuberay_resources(params["resources"]) == {"edge_pi": 1}
    assert int(params["object-store-memory"]) == 268435456
    assert spec["containers"][0]["image"].endswith(":pi")


def test_kuberay_edge_group_mounts_no_shared_volume(raycluster):
    spec = worker_groups(raycluster)["edge-pi"]["template"]["spec"]
    claims = [v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]
    assert claims == []


def test_kuberay_shared_claim_is_read_write_many(manifest, raycluster):
    claims = {
        doc["metadata"]["name"]: doc for doc in manifest if doc["kind"] == "PersistentVolumeClaim"
    }
    pod_specs = [
        raycluster["spec"]["headGroupSpec"]["template"]["spec"],
        worker_groups(raycluster)["gpu"]["template"]["spec"],
    ]
    for spec in pod_specs:
        (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        claim = claims[volume["persistentVolumeClaim"]["claimName"]]
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kuberay_mlflow_service_selects_head(manifest, raycluster):
    (service,) = [doc for doc in manifest if doc["kind"] == "Service"]
    selector = service["spec"]["selector"]
    assert selector["ray.io/cluster"] == raycluster["metadata"]["name"]
    assert selector["ray.io/node-type"] == "head"
    assert [port["targetPort"] for port in service["spec"]["ports"]] == [5000]


# Both recipes and the Dockerfile


def test_recipes_use_one_image_repository(launcher, raycluster):
    images = [launcher["docker"]["image"]]
    images += [
        node["docker"]["worker_image"]
        for node in launcher["available_node_types"].values()
        if "docker" in node
    ]
    groups = [raycluster["spec"]["headGroupSpec"], *raycluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        images += [container["image"] for container in group["template"]["spec"]["containers"]]
    repositories = {image_repository(image) for image in images}
    assert len(repositories) == 1, f"images point at several repositories: {sorted(images)}"
    tags = {image.rsplit(":", 1)[1] for image in images}
    assert tags == {"gpu", "pi"}


def test_dockerfile_ray_pin_is_installed_ray():
    pins = re.findall(r"^ARG RAY_VERSION=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert pins == [ray.__version__]


def test_kuberay_edge_anti_affinity_matches_group(raycluster):
    edge = worker_groups(raycluster)["edge-pi"]
    affinity = edge["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    labels = term["labelSelector"]["matchLabels"]
    assert labels["ray.io/group"] == edge["groupName"]
    assert labels["ray.io/cluster"] == raycluster["metadata"]["name"]


# The walkthrough (clusters/README.md) names only options that exist.

README = REPO / "clusters" / "README.md"
SCRIPTS = {
    "join.sh": REPO / "clusters" / "pi" / "join.sh",
    "setup.sh": REPO / "clusters" / "pi" / "setup.sh",
    "start_mlflow.sh": REPO / "clusters" / "head" / "start_mlflow.sh",
}


def readme_options(marker: str) -> set[str]:
    """Return the --options in the README's commands that mention marker.

    A command is a line of a fenced code block, with its backslash continuations, or an
    inline code span in the prose.
    """
    commands = []
    lines = README.read_text().splitlines()
    in_block = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            commands += [span for span in re.findall(r"`([^`]+)`", line) if marker in span]
            continue
        if marker not in line:
            continue
        text = line
        while text.endswith("\\") and index + 1 < len(lines):
            index += 1
            text = text[:-1] + lines[index]
        commands.append(text)
    option_pattern = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
    return {option for text in commands for option in option_pattern.findall(text)}


def shows_option(help_text: str, option: str) -> bool:
    """Return whether help_text lists option itself, not only a longer option starting with it."""
    return re.search(rf"{re.escape(option)}(?![a-z-])", help_text) is not None


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_readme_script_options_exist(script):
    result = subprocess.run(
        ["bash", str(SCRIPTS[script]), "--help"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    options = readme_options(script)
    assert options, f"the README never shows an option of {script}"
    for option in sorted(options):
        assert shows_option(result.stdout, option), f"README shows {option} for {script}"


def test_readme_sweep_options_exist(capsys):
    from lers_ray.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--help"])
    sweep_help = capsys.readouterr().out
    options = readme_options("lers-ray sweep")
    assert "--address" in options
    for option in sorted(options):
        assert shows_option(sweep_help, option), f"README shows {option} for lers-ray sweep"
