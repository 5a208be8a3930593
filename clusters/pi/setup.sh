#!/usr/bin/env bash
# Install the head's exact Python, torch and Ray versions and this checkout of lers_ray into a
# virtual environment on a Raspberry Pi (Raspberry Pi OS 64-bit, or any arm64 Debian/Ubuntu),
# so that clusters/pi/join.sh can join the Pi to the cluster.
#
# Raspberry Pi OS ships its own Python 3.11 patch release, which rarely equals the head's, and
# Ray rejects a node whose Python major.minor.micro differs. uv installs the head's patch
# release (a standalone CPython build) next to the system Python without replacing it.
set -euo pipefail

DEFAULT_UV_VERSION=0.13.8
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'USAGE'
Usage: setup.sh --head-versions FILE [options]

Create a virtual environment with the Python, Ray and torch versions listed in FILE (the
output of clusters/head/print_versions.sh on the head) and install this checkout of lers_ray
into it. torch comes from PyTorch's CPU wheel index at the head's version without its local
suffix (2.13.0+cu128 on the head installs 2.13.0 here).

Options:
  --head-versions FILE   versions printed on the head (required)
  --venv DIR             the virtual environment to create (default: ~/lers-ray-venv)
  --source DIR           the lers_ray checkout to install (default: this script's checkout)
  --uv-version VERSION   uv release used to install Python (default: 0.13.8)
  --dry-run              print the commands without running them or checking this machine
  -h, --help             show this help

It runs apt-get update and apt-get install python3-venv with sudo. It downloads from PyPI
(uv, Ray and the project's dependencies), from the python-build-standalone releases (Python,
through uv) and from download.pytorch.org (torch).
USAGE
}

fail() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

versions_file=""
venv="$HOME/lers-ray-venv"
source_dir="$(cd "$SCRIPT_DIR/../.." && pwd)"
uv_version="$DEFAULT_UV_VERSION"
dry_run=false

while (($# > 0)); do
    case "$1" in
        --head-versions | --venv | --source | --uv-version)
            (($# >= 2)) || fail "$1 needs a value; see --help"
            case "$1" in
                --head-versions) versions_file="$2" ;;
                --venv) venv="$2" ;;
                --source) source_dir="$2" ;;
                --uv-version) uv_version="$2" ;;
            esac
            shift 2
            ;;
        --dry-run) dry_run=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) fail "unknown argument '$1'; see --help" ;;
    esac
done

[[ -n "$versions_file" ]] \
    || fail "--head-versions FILE is missing. FILE is the output of" \
        "clusters/head/print_versions.sh on the head"
[[ -f "$versions_file" ]] || fail "head versions file '$versions_file' not found"
[[ -f "$source_dir/pyproject.toml" ]] \
    || fail "$source_dir is not a lers_ray checkout (no pyproject.toml). Give --source DIR"

# shellcheck source=versions.sh
source "$SCRIPT_DIR/versions.sh"
python_version="$(version_of python <"$versions_file")"
ray_version="$(version_of ray <"$versions_file")"
torch_version="$(version_of torch <"$versions_file")"
torch_version="${torch_version%%+*}"
[[ "$python_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
    || fail "$versions_file has no valid python=X.Y.Z line (got '$python_version')"
[[ -n "$ray_version" && "$ray_version" != "not-installed" ]] \
    || fail "$versions_file has no ray=VERSION line (got '$ray_version')"
[[ -n "$torch_version" && "$torch_version" != "not-installed" ]] \
    || fail "$versions_file has no torch=VERSION line (got '$torch_version')"

# Print a command (arguments that need it in single quotes), then run it unless --dry-run.
run() {
    local argument line="+"
    for argument in "$@"; do
        if [[ "$argument" =~ ^[A-Za-z0-9_./:=@+-]+$ ]]; then
            line+=" $argument"
        else
            line+=" '$argument'"
        fi
    done
    echo "$line"
    if [[ "$dry_run" == false ]]; then
        "$@"
    fi
}

if [[ "$dry_run" == false ]]; then
    machine="$(uname -m)"
    [[ "$machine" == "aarch64" ]] \
        || fail "this machine is $machine, but setup.sh installs arm64 (aarch64) builds. On a" \
            "Raspberry Pi, install the 64-bit Raspberry Pi OS first"
fi

# uv is installed from PyPI into its own small environment, because Raspberry Pi OS marks the
# system Python as externally managed (PEP 668) and rejects pip installs into it.
bootstrap="$venv.uv"
run sudo apt-get update
run sudo apt-get install -y python3-venv
run python3 -m venv "$bootstrap"
run "$bootstrap/bin/python" -m pip install "uv==$uv_version"
run "$bootstrap/bin/uv" python install "$python_version"
run "$bootstrap/bin/uv" venv --seed --python-preference only-managed \
    --python "$python_version" "$venv"
# torch before the project, as .ci/run does: the project accepts a range of torch versions.
run "$venv/bin/python" -m pip install --index-url "$TORCH_CPU_INDEX" "torch==$torch_version"
run "$venv/bin/python" -m pip install "ray[default]==$ray_version" "$source_dir"

if [[ "$dry_run" == true ]]; then
    exit 0
fi
echo
PYTHON="$venv/bin/python" bash "$SCRIPT_DIR/../head/print_versions.sh"
echo
echo "Join the cluster with:"
echo "  PYTHON=$venv/bin/python RAY=$venv/bin/ray \\"
echo "    $SCRIPT_DIR/join.sh HEAD_IP:6379 --head-versions $versions_file --node-ip-address PI_IP"
