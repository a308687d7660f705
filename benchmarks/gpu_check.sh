#!/usr/bin/env bash
# The GPU check in one command, from anywhere: bash benchmarks/gpu_check.sh [options]
# (installs, runs the engine tests on CUDA, benchmarks, a Locust run; see benchmarks/gpu_check.py).
# Needs only python3 >= 3.11 to start (GPU_CHECK_PYTHON to pick another); the outer timeout is a
# safety net above the script's own budget (--budget-s, default 470 s), which stops every step in time.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${GPU_CHECK_PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "gpu_check: needs Python >= 3.11 as '$py' (set GPU_CHECK_PYTHON)" >&2
    exit 2
fi
exec timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-510}" "$py" -u "$here/gpu_check.py" "$@"
