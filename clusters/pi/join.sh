#!/usr/bin/env bash
# Join this machine (a Raspberry Pi 4 in the reference setup) to a running Ray cluster as the
# edge node that measures trained models.
#
# The node advertises one unit of the custom resource edge_pi and no CPUs or GPUs, so Ray
# places only the edge measurement task (resources={"edge_pi": 1}, num_cpus=0) on it, one at a
# time. Ray refuses a node whose Python (major.minor.micro) or Ray version differs from the
# head's, with errors that do not say which versions differ, so this script compares them first
# and stops before `ray start` on any mismatch.
set -euo pipefail

DEFAULT_OBJECT_STORE_BYTES=268435456 # 256 MiB; a Pi 4 has 4 or 8 GiB of memory
MIN_OBJECT_STORE_BYTES=78643200      # 75 MiB, Ray's minimum object store size
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRINT_VERSIONS="$SCRIPT_DIR/../head/print_versions.sh"

usage() {
    cat <<'USAGE'
Usage: join.sh HEAD_ADDRESS (--head-versions FILE | --head-ssh USER@HOST) [options]

Check that this node's Python and Ray versions equal the head's, check that lers_ray, torch
and numpy import, then run:
  ray start --address HEAD_ADDRESS --num-cpus 0 --num-gpus 0 --resources '{"edge_pi": 1}'
            --object-store-memory BYTES --disable-usage-stats [--node-ip-address IP]

Arguments:
  HEAD_ADDRESS               the head's Ray address, HOST:PORT (Ray's default port is 6379)

Options:
  --head-versions FILE       the output of clusters/head/print_versions.sh run on the head
  --head-ssh USER@HOST       run print_versions.sh on the head over ssh instead
  --head-command CMD         the command that ssh runs on the head; it reads the script on
                             standard input (default: bash -s). For a head inside a container:
                             'docker exec -i CONTAINER bash -s'
  --object-store-memory BYTES
                             size of this node's object store (default: 268435456 = 256 MiB)
  --node-ip-address IP       the address of this node that every other node can reach
  --dry-run                  run the checks and print the ray start command without running it
  -h, --help                 show this help

Environment:
  PYTHON   the interpreter that Ray runs on this node (default: python3)
  RAY      the ray executable of that interpreter (default: ray on PATH)
USAGE
}

fail() {
    echo "join.sh: error: $*" >&2
    exit 1
}

head_address=""
head_versions_file=""
head_ssh=""
head_command="bash -s"
object_store_bytes="$DEFAULT_OBJECT_STORE_BYTES"
node_ip=""
dry_run=false

while (($# > 0)); do
    case "$1" in
        --head-versions | --head-ssh | --head-command | --object-store-memory | --node-ip-address)
            (($# >= 2)) || fail "$1 needs a value; see --help"
            case "$1" in
                --head-versions) head_versions_file="$2" ;;
                --head-ssh) head_ssh="$2" ;;
                --head-command) head_command="$2" ;;
                --object-store-memory) object_store_bytes="$2" ;;
                --node-ip-address) node_ip="$2" ;;
            esac
            shift 2
            ;;
        --dry-run) dry_run=true; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) fail "unknown option '$1'; see --help" ;;
        *)
            [[ -z "$head_address" ]] \
                || fail "unexpected argument '$1': HEAD_ADDRESS is already '$head_address'"
            head_address="$1"
            shift
            ;;
    esac
done

if [[ -z "$head_address" ]]; then
    usage >&2
    fail "HEAD_ADDRESS is missing"
fi
# NOTE: IPv6 head addresses are not accepted; give the head's IPv4 address or host name.
[[ "$head_address" =~ ^[^:/[:space:]]+:[0-9]+$ ]] \
    || fail "HEAD_ADDRESS must be HOST:PORT (for example 192.168.1.10:6379), got '$head_address'"
if [[ -n "$head_versions_file" && -n "$head_ssh" ]]; then
    fail "give --head-versions or --head-ssh, not both"
fi
[[ -n "$head_versions_file" || -n "$head_ssh" ]] \
    || fail "the head's versions are missing. Give --head-versions FILE (the output of" \
        "print_versions.sh on the head) or --head-ssh USER@HOST"
[[ "$object_store_bytes" =~ ^[0-9]+$ ]] \
    || fail "--object-store-memory must be a number of bytes, got '$object_store_bytes'"
((object_store_bytes >= MIN_OBJECT_STORE_BYTES)) \
    || fail "--object-store-memory $object_store_bytes is below Ray's minimum of" \
        "$MIN_OBJECT_STORE_BYTES bytes (75 MiB)"

python="${PYTHON:-python3}"
ray="${RAY:-ray}"
command -v "$python" >/dev/null 2>&1 \
    || fail "Python interpreter '$python' not found. Set PYTHON to the interpreter that has Ray" \
        "installed"
command -v "$ray" >/dev/null 2>&1 \
    || fail "'$ray' not found. Install Ray for $python, or set RAY to its ray executable"
[[ -f "$PRINT_VERSIONS" ]] || fail "$PRINT_VERSIONS not found. Run join.sh from a lers_ray checkout"

# shellcheck source=versions.sh
source "$SCRIPT_DIR/versions.sh"

if [[ -n "$head_versions_file" ]]; then
    [[ -f "$head_versions_file" ]] \
        || fail "head versions file '$head_versions_file' not found. Create it on the head with" \
            "clusters/head/print_versions.sh > head_versions.txt and copy it here"
    head_versions="$(cat "$head_versions_file")"
    head_source="$head_versions_file"
else
    head_versions="$(ssh "$head_ssh" "$head_command" <"$PRINT_VERSIONS")" \
        || fail "could not run print_versions.sh on $head_ssh with '$head_command'. Check the" \
            "ssh access, or use --head-versions"
    head_source="$head_ssh"
fi
head_python="$(version_of python <<<"$head_versions")"
head_ray="$(version_of ray <<<"$head_versions")"
[[ "$head_python" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
    || fail "no valid python=X.Y.Z line in the head's versions ($head_source, got" \
        "'$head_python'). Produce them with clusters/head/print_versions.sh"
[[ -n "$head_ray" ]] \
    || fail "no ray=VERSION line in the head's versions ($head_source)." \
        "Produce them with clusters/head/print_versions.sh"
[[ "$head_ray" != "not-installed" ]] \
    || fail "the head's versions ($head_source) say Ray is not installed: print_versions.sh ran" \
        "with another interpreter than the one Ray runs on the head. Run it there again with" \
        "PYTHON set to that interpreter"

# print_versions.sh exits 1 when Ray is missing; the check below explains that case.
local_versions="$(PYTHON="$python" bash "$PRINT_VERSIONS" 2>/dev/null)" || true
local_python="$(version_of python <<<"$local_versions")"
local_ray="$(version_of ray <<<"$local_versions")"
[[ -n "$local_python" ]] || fail "could not read the versions of $python"

if [[ "$local_python" != "$head_python" ]]; then
    fail "Python version mismatch: the head runs Python $head_python, but this node's $python" \
        "is Python $local_python.
Ray only joins nodes with the same Python major.minor.micro version. Install Python $head_python
on this node (clusters/pi/setup.sh --head-versions FILE does that in a virtual environment) and
run join.sh again with PYTHON pointing at it."
fi
if [[ "$local_ray" == "not-installed" ]]; then
    fail "Ray is not installed for $python. Build the edge environment with" \
        "clusters/pi/setup.sh --head-versions FILE, then run join.sh with PYTHON and RAY" \
        "pointing into it."
fi
if [[ "$local_ray" != "$head_ray" ]]; then
    fail "Ray version mismatch: the head runs Ray $head_ray, but this node's $python has Ray" \
        "$local_ray.
Rebuild the edge environment with clusters/pi/setup.sh --head-versions FILE, or install the
head's version into the environment of $python (not the system Python):
  $python -m pip install 'ray[default]==$head_ray'
and run join.sh again."
fi

import_error="$("$python" -c 'import numpy, torch, lers_ray' 2>&1)" \
    || fail "$python cannot import lers_ray, torch and numpy, which the edge measurement needs:
$import_error
Install them with clusters/pi/setup.sh, or: $python -m pip install torch numpy /path/to/lers_ray"

# The ray executable may belong to another environment than PYTHON. A ray script installed by
# pip starts with a #! line naming its interpreter; compare that environment with PYTHON's.
ray_path="$(command -v "$ray")"
read -r ray_shebang <"$ray_path" || true
ray_interpreter="${ray_shebang#\#!}"
if [[ "$ray_shebang" == "#!"* && "$ray_interpreter" == *python* && -x "$ray_interpreter" ]]; then
    ray_prefix="$("$ray_interpreter" -c 'import sys; print(sys.prefix)' 2>/dev/null || true)"
    python_prefix="$("$python" -c 'import sys; print(sys.prefix)')"
    [[ "$ray_prefix" == "$python_prefix" ]] \
        || fail "'$ray_path' belongs to the environment $ray_prefix, but PYTHON ($python) is in" \
            "$python_prefix. Set RAY to the ray executable of $python's environment"
fi
ray_cli_version="$("$ray" --version 2>&1)" || fail "'$ray --version' failed: $ray_cli_version"
[[ "$ray_cli_version" == *" $head_ray" ]] \
    || fail "'$ray' reports '$ray_cli_version', but the head runs Ray $head_ray. Set RAY to" \
        "the ray executable next to $python"

start_args=(
    start
    --address "$head_address"
    --num-cpus 0
    --num-gpus 0
    --resources '{"edge_pi": 1}'
    --object-store-memory "$object_store_bytes"
    --disable-usage-stats
)
if [[ -n "$node_ip" ]]; then
    start_args+=(--node-ip-address "$node_ip")
fi

echo "versions match the head ($head_source): Python $local_python, Ray $local_ray"
if [[ "$dry_run" == true ]]; then
    printf 'dry run, would run: %s' "$ray"
    for argument in "${start_args[@]}"; do
        if [[ "$argument" =~ ^[A-Za-z0-9_./:=@-]+$ ]]; then
            printf ' %s' "$argument"
        else
            printf " '%s'" "$argument"
        fi
    done
    printf '\n'
    exit 0
fi
exec "$ray" "${start_args[@]}"
