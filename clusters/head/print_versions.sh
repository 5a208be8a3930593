#!/usr/bin/env bash
# Print the versions that every node of a Ray cluster must share, one NAME=VERSION per line:
#
#   python=3.11.14
#   ray=2.60.0
#   torch=2.13.0+cu128
#   lers_ray=0.1.0
#
# A package that the interpreter cannot find prints NAME=not-installed, and a missing Ray also
# makes the script exit 1 (the interpreter is then not the one Ray runs). Ray requires equal
# python and ray versions on every node, so clusters/pi/join.sh compares those two lines of this
# output (copied from the head, or read over ssh). clusters/pi/setup.sh installs the versions.
#
# Usage: print_versions.sh            (the interpreter is $PYTHON, default python3)
#        ssh HOST bash -s < print_versions.sh
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "print_versions.sh: error: Python interpreter '$python' not found; set PYTHON to the" \
        "interpreter that runs Ray on this node" >&2
    exit 1
fi

# importlib.metadata reads the installed versions without importing torch or Ray, which takes
# seconds on a Raspberry Pi. For release wheels the metadata version equals ray.__version__,
# the value Ray compares when a node joins.
"$python" - <<'PYTHON'
import sys
from importlib import metadata

print("python=" + ".".join(str(part) for part in sys.version_info[:3]))
for name in ("ray", "torch", "lers_ray"):
    try:
        print(f"{name}={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}=not-installed")
PYTHON
if ! "$python" -c 'from importlib import metadata; metadata.version("ray")' >/dev/null 2>&1; then
    echo "print_versions.sh: error: Ray is not installed for '$python'. Set PYTHON to the" \
        "interpreter that runs Ray on this node" >&2
    exit 1
fi
