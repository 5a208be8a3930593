"""Options of an edge measurement (importable without torch, for the CLI and the driver)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
        """Raise ``ValueError`` naming the option that is out of range."""
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")

    def to_args(self) -> list[str]:
        """Return the command-line flags of :func:`main` for these options."""
        return [f"--{key.replace('_', '-')}={value}" for key, value in asdict(self).items()]
