#!/usr/bin/env bash
# Dependency floors: install the minimum version of every dependency pyproject.toml declares
# (`name>=X` installed as `name==X`) into a fresh virtual environment and run a smoke subset
# of the tests there. torch is the exception: the only wheel these machines install without a
# multi-GB CUDA download is torch 2.13.0 (CPU), so the floor job pins it and tests that.
#
#   bash scripts/check_floors.sh              # what .ci/run runs after the main suite
#   KEEP_FLOOR_VENV=1 bash scripts/check_floors.sh   # keep the environment (path printed)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_TESTED=2.13.0
work=$(mktemp -d "${TMPDIR:-/tmp}/smora-floors.XXXXXX")
if [ -z "${KEEP_FLOOR_VENV:-}" ]; then trap 'rm -rf "$work"' EXIT; fi
echo "floor environment: $work"

python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
# name==floor for every `name>=floor` of pyproject.toml; torch==2.13.0.
python - "$TORCH_TESTED" > "$work/floors.txt" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"]:
    name, floor = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", requirement.strip()).groups()
    print(f"{name}=={sys.argv[1] if name == 'torch' else floor}")
EOF
echo "installing:" $(cat "$work/floors.txt")
# This machine's pip configuration names local wheel folders that may be missing: not news.
install() {
    pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
started=$SECONDS
install --upgrade pip
install "torch==$TORCH_TESTED"
install -c "$work/floors.txt" -e . "pytest>=8" "hypothesis>=6"
install --no-deps -r requirements-offline.txt
echo "floor install took $((SECONDS - started)) s"
pip list 2>/dev/null | grep -iE '^(torch|transformers|accelerate|datasets|peft|evaluate|numpy|pandas|scipy|scikit-learn|typer) '

# Loading, training, evaluating, merging, the command line and PEFT interchange on tiny models.
python -m pytest -p no:cacheprovider \
    tests/adapters/test_io.py \
    tests/adapters/test_peft_classifier.py \
    tests/test_cli.py \
    tests/test_train.py::test_classifier_run_writes_everything \
    tests/test_train_lm.py \
    tests/test_checkpoint_state.py \
    tests/evaluation/test_eval.py::test_glue_folder_eval_matches_independent_scoring \
    tests/evaluation/test_metrics.py \
    tests/test_merge.py \
    tests/data/test_saved_sources.py
