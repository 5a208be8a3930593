"""Named datasets: where their files sit under the data dir and how they are split.

A registered LightGCN-format folder contains ``train.txt`` and ``test.txt``, and optionally
``valid.txt``. Without ``valid.txt`` the validation split is carved from train (per user,
``DatasetConfig.valid_fraction``, seeded). A MovieLens-format folder contains ``u.data``, split
80/10/10 per user. A custom dataset is ``DatasetConfig(path=..., format=...)`` with the same
file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lers_ray.config import ConfigError, DatasetConfig

FORMATS = ("lightgcn", "movielens")

LIGHTGCN_TRAIN = "train.txt"
LIGHTGCN_VALID = "valid.txt"
LIGHTGCN_TEST = "test.txt"
MOVIELENS_RATINGS = "u.data"


@dataclass(frozen=True)
class DatasetSpec:
    """Location, file format and fetch availability of a named dataset."""

    name: str
    folder: str | None
    """Folder relative to the data dir; ``None`` for generated data."""
    format: str
    """``lightgcn``, ``movielens`` or ``synthetic``."""
    description: str
    missing_detail: dict[str, str]
    """Extra text for the missing-file error, keyed by file name."""
    fetchable: bool = True
    """Whether ``lers-ray data fetch NAME`` can download the files."""


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-100k",
            "movielens-100k",
            "movielens",
            "MovieLens-100K ratings, rating >= threshold is positive, per-user 80/10/10 split",
            {},
        ),
        DatasetSpec(
            "gowalla",
            "gowalla",
            "lightgcn",
            "Gowalla, LightGCN train/test split, validation carved from train",
            {},
        ),
        DatasetSpec(
            "yelp2018",
            "yelp2018",
            "lightgcn",
            "Yelp2018, LightGCN train/test split, validation carved from train",
            {
                LIGHTGCN_TRAIN: (
                    "Only test.txt of the LightGCN Yelp2018 split is there; the train split "
                    "(about 7 MB, kuandeng/LightGCN Data/yelp2018/train.txt) is missing."
                )
            },
        ),
        DatasetSpec(
            "ml-1m",
            "movielens-1m/lightgcnpp_implicit_split",
            "lightgcn",
            "MovieLens-1M implicit split of LightGCN++ with its own train/valid/test files",
            {
                LIGHTGCN_TRAIN: (
                    "This is LightGCN++'s implicit ML-1M split (geon0325/LightGCNpp, "
                    "data/ml-1m); it has no download here, so copy train/valid/test.txt there."
                )
            },
            fetchable=False,
        ),
        DatasetSpec(
            "synthetic", None, "synthetic", "seeded power-law synthetic data", {}, fetchable=False
        ),
    )
}


def registered_names() -> list[str]:
    """Return the names accepted by ``DatasetConfig.name`` without a ``path``."""
    return list(REGISTRY)


def _detect_format(folder: Path) -> str:
    if (folder / MOVIELENS_RATINGS).is_file():
        return "movielens"
    if (folder / LIGHTGCN_TRAIN).is_file():
        return "lightgcn"
    raise ConfigError(
        f"dataset.format: not set, and {folder} has neither {MOVIELENS_RATINGS} nor "
        f"{LIGHTGCN_TRAIN}; set dataset.format to one of {', '.join(FORMATS)} "
        "or check dataset.path"
    )


def resolve_spec(config: DatasetConfig, data_dir: Path) -> tuple[DatasetSpec, Path | None]:
    """Return the dataset's spec and its folder (``None`` for synthetic data).

    With ``config.path`` the folder is that path and the format is ``config.format``, or
    detected from the files present when unset. Otherwise ``config.name`` must be registered,
    and the folder is ``data_dir / spec.folder``.

    Raises:
        ConfigError: for an unknown name or format, or a custom folder without a known layout.
    """
    if config.path is not None:
        folder = Path(config.path).expanduser()
        dataset_format = config.format or _detect_format(folder)
        if dataset_format not in FORMATS:
            raise ConfigError(
                f"dataset.format: unknown format {dataset_format!r}; "
                f"choose one of {', '.join(FORMATS)}"
            )
        custom = DatasetSpec(
            config.name, None, dataset_format, f"custom dataset at {folder}", {}, fetchable=False
        )
        return custom, folder

    spec = REGISTRY.get(config.name)
    if spec is None:
        raise ConfigError(
            f"dataset.name: unknown dataset {config.name!r}; choose one of "
            f"{', '.join(REGISTRY)}, or set dataset.path (and dataset.format) for your own files"
        )
    if config.format is not None and config.format != spec.format:
        raise ConfigError(
            f"dataset.format: {config.format!r} does not match the registered dataset "
            f"{spec.name!r}, which is {spec.format}; remove dataset.format"
        )
    if spec.folder is None:
        return spec, None
    return spec, Path(data_dir) / spec.folder
