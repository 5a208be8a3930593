"""Options of an edge measurement (importable without torch, for the CLI and the driver)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields


@dataclass
class BenchOptions:
    """How to measure."""

    threads: int = 1
    """torch intra-op threads (``torch.set_num_threads``)."""
    repeats: int = 30
    """Timed queries per mode (at least 30 for the protocol's p95)."""
    warmup: int = 5
    """Untimed queries before the timed ones, per mode."""
    top_k: int = 20
    seed: int = 0
    """Seed of the users queried."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the command-line option that is out of range."""
        for key, least in (("threads", 1), ("repeats", 1), ("warmup", 0), ("top_k", 1)):
            value = getattr(self, key)
            if value < least:
                flag = "--" + key.replace("_", "-")
                raise ValueError(f"{flag} must be at least {least}, got {value}")

    def to_args(self) -> list[str]:
        """Return the command-line flags that :func:`add_arguments` parses back."""
        return [f"--{key.replace('_', '-')}={value}" for key, value in asdict(self).items()]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one integer flag per field (``--top-k`` for ``top_k``), with its default."""
        defaults = cls()
        for field in fields(cls):
            parser.add_argument(
                f"--{field.name.replace('_', '-')}",
                type=int,
                default=getattr(defaults, field.name),
                help=f"{OPTION_HELP[field.name]} (default: %(default)s)",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        """Return the options parsed by the flags of :meth:`add_arguments`."""
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})


OPTION_HELP = {
    "threads": "torch threads",
    "repeats": "timed queries per mode",
    "warmup": "untimed queries per mode before the timed ones",
    "top_k": "items returned per query",
    "seed": "seed of the queried users",
}
"""Command-line help of each :class:`BenchOptions` field."""
