"""Peak resident memory of the current process, resettable per phase on Linux."""

from __future__ import annotations

import resource


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); True on success.

    Ray Tune reuses a worker process for several trials, and without a reset the peak would
    be the largest of every trial that process ran.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_mib(field: str) -> float | None:
    """Return a ``/proc/self/status`` memory field (reported in KiB) in MiB, or ``None``."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """Return the peak resident memory in MiB since the last reset (else since process start)."""
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    # NOTE: without /proc this is the lifetime peak, which in a reused Ray worker can come from
    # an earlier trial. Linux reports ru_maxrss in KiB; macOS reports bytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Return the current resident memory in MiB (``nan`` where ``/proc`` is missing)."""
    current = _status_mib("VmRSS")
    return float("nan") if current is None else current
