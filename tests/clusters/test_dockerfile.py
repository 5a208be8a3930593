"""The Dockerfile, read with a small parser: Docker cannot build in the test environment."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import ray

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CI_RUN = REPO / ".ci" / "run"
RUNTIME_STAGES = ("gpu", "pi")
"""The build targets. Other stages only provide files to copy."""


@dataclass
class Instruction:
    """One Dockerfile instruction: keyword in upper case, arguments with continuations joined."""

    keyword: str
    arguments: str


@dataclass
class Stage:
    """A build stage: its FROM line resolved, and its instructions with build args resolved."""

    name: str
    base: str
    platform: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def commands(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]


def parse_instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining lines that end with a backslash.

    Comment lines are dropped, also inside a continued instruction, as Docker does.
    """
    instructions = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, f"the Dockerfile ends inside a continued line: {pending!r}"
    return instructions


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace ${NAME} and $NAME of the given build args; other variables stay as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, text)


def parse_arg(arguments: str) -> tuple[str, str | None]:
    name, equals, default = arguments.partition("=")
    return name.strip(), default.strip().strip('"') if equals else None


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Return the named stages, with global build args (before the first FROM) resolved."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    stage_args: dict[str, str] = {}
    for instruction in parse_instructions(text):
        if instruction.keyword == "FROM":
            words = substitute(instruction.arguments, global_args).split()
            platform = None
            if words[0].startswith("--platform="):
                platform = words.pop(0).removeprefix("--platform=")
            assert len(words) == 3, f"FROM without `AS NAME`: {instruction.arguments}"
            assert words[1].upper() == "AS"
            stage = Stage(name=words[2], base=words[0], platform=platform)
            stages[stage.name] = stage
            stage_args = {}
        elif stage is None:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before the first FROM"
            name, default = parse_arg(instruction.arguments)
            assert default is not None, f"global ARG {name} has no default"
            global_args[name] = default
        else:
            if instruction.keyword == "ARG":
                name, default = parse_arg(instruction.arguments)
                value = default if default is not None else global_args.get(name)
                assert value is not None, f"ARG {name} of stage {stage.name} has no value"
                stage_args[name] = value
            arguments = substitute(instruction.arguments, stage_args)
            stage.instructions.append(Instruction(instruction.keyword, arguments))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def ci_torch_version() -> str:
    pins = re.findall(r"pip install .*\btorch==([0-9][^\s\"']*)", CI_RUN.read_text())
    assert len(pins) == 1, f"expected one torch==VERSION install in {CI_RUN}, found {pins}"
    return pins[0]


def project_source(stage: Stage) -> str:
    """Return where the stage copies the build context (`COPY . DEST`)."""
    copies = [c.split() for c in stage.commands("COPY")]
    sources = [words[-1] for words in copies if words[:-1] == ["."]]
    assert len(sources) == 1, f"stage {stage.name} copies the build context {len(sources)} times"
    return sources[0]


def pip_installs(stage: Stage) -> list[str]:
    return [run for run in stage.commands("RUN") if "pip install" in run]


def torch_install(stage: Stage) -> str:
    found = [run for run in pip_installs(stage) if re.search(r"\btorch==", run)]
    assert len(found) == 1, f"stage {stage.name} installs torch {len(found)} times: {found}"
    return found[0]


def project_install(stage: Stage) -> str:
    source = project_source(stage)
    found = [run for run in pip_installs(stage) if f'"{source}"' in run or f" {source} " in run]
    assert len(found) == 1, f"stage {stage.name} installs {source} {len(found)} times"
    return found[0]


# The parser itself


def test_parser_joins_continuations_and_drops_comments():
    text = "FROM a AS b\nRUN one \\\n    # a comment\n    two\nUSER x\n"
    instructions = parse_instructions(text)
    assert [i.keyword for i in instructions] == ["FROM", "RUN", "USER"]
    assert instructions[1].arguments == "one two"


def test_parser_resolves_global_and_stage_args():
    text = (
        "ARG V=1.0\nARG BASE=img\nFROM ${BASE}:$V AS s\nARG V\nARG W=2\nRUN x==${V} y==$W $PATH\n"
    )
    (stage,) = parse_dockerfile(text).values()
    assert stage.base == "img:1.0"
    assert stage.commands("RUN") == ["x==1.0 y==2 $PATH"]


# The Dockerfile


def test_dockerfile_has_cuda_stage(stages):
    gpu = stages["gpu"]
    assert gpu.base.startswith("nvidia/cuda:")
    assert "-runtime-" in gpu.base


def test_dockerfile_has_arm64_stage(stages):
    pi = stages["pi"]
    assert pi.platform == "linux/arm64"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", pi.base)


def test_dockerfile_stages_share_python_version(stages):
    # Ray rejects a node whose Python patch release differs from the head's.
    pi_python = stages["pi"].base.removeprefix("python:").removesuffix("-slim-bookworm")
    runs = " ".join(stages["gpu"].commands("RUN"))
    assert f'uv python install "{pi_python}"' in runs
    assert f'--python "{pi_python}"' in runs


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_dockerfile_torch_pin_matches_ci(stages, name, ci_torch_version):
    assert f'"torch=={ci_torch_version}"' in torch_install(stages[name])


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_dockerfile_torch_before_project(stages, name):
    runs = stages[name].commands("RUN")
    assert runs.index(torch_install(stages[name])) < runs.index(project_install(stages[name]))


def test_dockerfile_torch_wheel_indexes(stages):
    assert "--index-url" in torch_install(stages["gpu"])
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", torch_install(stages["gpu"]))
    assert "download.pytorch.org/whl/cpu" in torch_install(stages["pi"])


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_dockerfile_installs_project_from_build_context(stages, name):
    source = project_source(stages[name])
    assert source.startswith("/")
    # Editable: the default search spaces are read from the checkout's search_spaces/ folder.
    assert f'pip install -e "{source}"' in project_install(stages[name])


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_dockerfile_ray_pin_is_installed_ray(stages, name):
    assert re.search(
        rf'"ray\[[a-z,]+\]=={re.escape(ray.__version__)}"', project_install(stages[name])
    )


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_dockerfile_stage_ends_as_non_root(stages, name):
    users = stages[name].commands("USER")
    assert users, f"stage {name} has no USER line, so it runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_dockerfile_home_matches_user(stages, name):
    # The Ray cluster launcher reads HOME from the image to place its bootstrap files.
    user = stages[name].commands("USER")[-1]
    assert f"HOME=/home/{user}" in stages[name].commands("ENV")


# .dockerignore


def ignore_patterns() -> set[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return {line.strip("/") for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("excluded", [".venv", "runs", ".git", "data", "**/__pycache__"])
def test_dockerignore_excludes(excluded):
    assert excluded in ignore_patterns()


@pytest.mark.parametrize("needed", ["lers_ray", "search_spaces", "clusters", "pyproject.toml"])
def test_dockerignore_keeps_image_sources(needed):
    assert needed not in ignore_patterns()
