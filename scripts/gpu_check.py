"""The GPU check of issue 16 (see smora_cli/bench/gpu_check.py); run it through gpu_check.sh.

python scripts/gpu_check.py --dry-run            # CPU, tiny shapes: proves the script
python scripts/gpu_check.py --out results/        # on one GPU (about 8 minutes on an H200)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's smora_cli

from smora_cli.bench.gpu_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
