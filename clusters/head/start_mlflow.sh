#!/usr/bin/env bash
# Start the MLflow tracking server of a lers_ray cluster on the head node.
#
# The backend store (run data) and the artifacts live under one folder on shared storage, so a
# replaced head keeps every sweep's history. Sweeps then log with
# `lers-ray sweep ... --tracking-uri http://HEAD:PORT`.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: start_mlflow.sh [options] [-- EXTRA_MLFLOW_SERVER_ARGS...]

Start `mlflow server` in the background (its own process group), wait until GET /health
responds, and write the server's PID to DIR/server.pid and its output to DIR/server.log.

Options:
  --dir DIR                folder for the store, artifacts, PID and log
                           (default: $LERS_MLFLOW_DIR, else /mnt/lers/mlflow)
  --host HOST              interface to bind (default: $LERS_MLFLOW_HOST, else 0.0.0.0)
  --port PORT              port (default: $LERS_MLFLOW_PORT, else 5000)
  --backend-store-uri URI  run store (default: $MLFLOW_BACKEND_STORE_URI, else
                           sqlite:///DIR/mlflow.db); a postgresql:// URI also works
  --artifacts-destination URI
                           artifact store (default: $MLFLOW_ARTIFACTS_DESTINATION,
                           else DIR/artifacts)
  --timeout SECONDS        how long to wait for /health (default: 180)
  --foreground             run the server in the foreground (a container's main process)
  --stop                   stop the server whose PID is in DIR/server.pid, then exit
  -h, --help               show this help

Environment: MLFLOW (the mlflow executable, default: mlflow on PATH), PYTHON (the
interpreter that polls /health, default: python3). MLFLOW_DISABLE_TELEMETRY is set to true.
Arguments after -- go to `mlflow server` unchanged (for example --allowed-hosts).
USAGE
}

fail() {
    echo "start_mlflow.sh: error: $*" >&2
    exit 1
}

dir="${LERS_MLFLOW_DIR:-/mnt/lers/mlflow}"
host="${LERS_MLFLOW_HOST:-0.0.0.0}"
port="${LERS_MLFLOW_PORT:-5000}"
backend_store_uri="${MLFLOW_BACKEND_STORE_URI:-}"
artifacts_destination="${MLFLOW_ARTIFACTS_DESTINATION:-}"
timeout_s=180
foreground=false
stop=false
extra_args=()

while (($# > 0)); do
    case "$1" in
        --dir | --host | --port | --backend-store-uri | --artifacts-destination | --timeout)
            (($# >= 2)) || fail "$1 needs a value; see --help"
            case "$1" in
                --dir) dir="$2" ;;
                --host) host="$2" ;;
                --port) port="$2" ;;
                --backend-store-uri) backend_store_uri="$2" ;;
                --artifacts-destination) artifacts_destination="$2" ;;
                --timeout) timeout_s="$2" ;;
            esac
            shift 2
            ;;
        --foreground) foreground=true; shift ;;
        --stop) stop=true; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra_args=("$@"); break ;;
        *) fail "unknown argument '$1'; see --help" ;;
    esac
done

[[ "$port" =~ ^[0-9]+$ ]] || fail "--port must be a number, got '$port'"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || fail "--timeout must be whole seconds, got '$timeout_s'"
[[ "$dir" == /* ]] || fail "--dir must be an absolute path (SQLite URIs need one), got '$dir'"

pid_file="$dir/server.pid"
log_file="$dir/server.log"

if [[ "$stop" == true ]]; then
    [[ -f "$pid_file" ]] || fail "$pid_file not found: no server started with --dir $dir"
    pid="$(cat "$pid_file")"
    # The server was started as the leader of its own process group: stop the whole group
    # (the app server and its workers).
    if kill -TERM -- "-$pid" 2>/dev/null; then
        echo "stopped the MLflow server (process group $pid)"
    else
        echo "no process group $pid is running; removing the stale $pid_file"
    fi
    rm -f "$pid_file"
    exit 0
fi

mlflow="${MLFLOW:-mlflow}"
python="${PYTHON:-python3}"
command -v "$mlflow" >/dev/null 2>&1 \
    || fail "'$mlflow' not found; install the project (it depends on mlflow) or set MLFLOW"

mkdir -p "$dir" || fail "cannot create $dir; is the shared storage mounted and writable?"
backend_store_uri="${backend_store_uri:-sqlite:///$dir/mlflow.db}"
artifacts_destination="${artifacts_destination:-$dir/artifacts}"

export MLFLOW_DISABLE_TELEMETRY=true
# Background job execution adds worker processes that lers_ray does not use (about 1.3 GiB
# less memory without it, measured with MLflow 3.17 on a 2-core machine).
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

server_args=(
    server
    --backend-store-uri "$backend_store_uri"
    --artifacts-destination "$artifacts_destination"
    --serve-artifacts
    --host "$host"
    --port "$port"
    --workers 1
    "${extra_args[@]}"
)

if [[ "$foreground" == true ]]; then
    exec "$mlflow" "${server_args[@]}"
fi

if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "an MLflow server from $pid_file is already running (PID $(cat "$pid_file"));" \
        "stop it first with: $0 --dir $dir --stop"
    exit 0
fi

# setsid makes the server the leader of a new process group, so --stop can end all of it.
setsid "$mlflow" "${server_args[@]}" >>"$log_file" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"

# Uvicorn logs that it is running before the port accepts requests, so poll the health endpoint.
health_host="$host"
if [[ "$health_host" == "0.0.0.0" ]]; then
    health_host="127.0.0.1"
fi
health_url="http://$health_host:$port/health"
deadline=$((SECONDS + timeout_s))
until "$python" - "$health_url" <<'PYTHON' 2>/dev/null; do
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PYTHON
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pid_file"
        fail "the MLflow server exited during start-up; last lines of $log_file:
$(tail -n 20 "$log_file")"
    fi
    if ((SECONDS >= deadline)); then
        kill -TERM -- "-$pid" 2>/dev/null || true
        rm -f "$pid_file"
        fail "the MLflow server did not respond at $health_url within ${timeout_s} s; see $log_file"
    fi
    sleep 1
done

echo "MLflow server running (PID $pid): http://$host:$port"
echo "  store: $backend_store_uri"
echo "  artifacts: $artifacts_destination"
echo "  log: $log_file"
