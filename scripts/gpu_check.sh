#!/usr/bin/env bash
# The GPU check of issue 16: every method trained in bf16 against float32 and resumed, eval
# and merge, the adapter benchmark (eager, profiled, compiled) and the accelerate configs, on
# one GPU in about 8 minutes. Writes gpu_check.json and gpu_check.log to --out (default $OUT).
#
#   scripts/gpu_check.sh fetch-wheels DIR [--deepspeed]   # here (PyPI): wheels the GPU lacks
#   scripts/gpu_check.sh --wheels DIR [FLAGS]             # there: install them, run the check
#   scripts/gpu_check.sh --dry-run [FLAGS]                # any CPU: the same steps, tiny shapes
#
# FLAGS: see `python scripts/gpu_check.py --help` (--out, --budget-s, --sections, --variants).
# PYTHON selects the interpreter (default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" == "fetch-wheels" ]]; then
    dest="${2:?usage: scripts/gpu_check.sh fetch-wheels DIR [--deepspeed]}"
    # The GPU machine runs CPython 3.12 on x86-64 Linux.
    target=(--only-binary=:all: --python-version 3.12 --implementation cp
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
            --platform manylinux2014_x86_64)
    pins=$("$python" -c 'from smora_cli.bench.wheels import WHEELS; print(" ".join(WHEELS))')
    if [[ "${3:-}" == "--deepspeed" ]]; then
        extra=$("$python" -c 'from smora_cli.bench.wheels import DEEPSPEED_WHEELS as W
print(" ".join(p for p in W if not p.startswith("deepspeed")))')
        pins="$pins $extra"
        # DeepSpeed ships a source archive only: build a pure-Python wheel (ops compile there).
        ds=$("$python" -c 'from smora_cli.bench.wheels import DEEPSPEED_WHEELS as W
print(next(p for p in W if p.startswith("deepspeed")))')
        DS_BUILD_OPS=0 "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$dest" "$ds"
    fi
    # shellcheck disable=SC2086
    "$python" -m pip download -q --no-deps "${target[@]}" -d "$dest" $pins
    ls -l "$dest"
    exit 0
fi

if [[ "${1:-}" == "--wheels" ]]; then
    wheels="${2:?--wheels needs a folder of .whl files}"
    shift 2
    site="${SMORA_CHECK_SITE:-/tmp/smora-check-site}"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"
fi

export PYTHONUNBUFFERED=1
exec "$python" "$root/scripts/gpu_check.py" "$@"
