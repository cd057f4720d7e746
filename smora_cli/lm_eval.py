"""`python -m smora_cli.lm_eval ...`: lm-evaluation-harness's command line with the `smora`
model registered (see `smora_cli.evaluation.harness`). Every argument is the harness's."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        sys.stderr.write(
            "error: lm-evaluation-harness is not installed: pip install 'smora-cli[lm-eval]'\n"
        )
        sys.exit(2)
    import smora_cli.evaluation.harness  # noqa: F401  (registers the `smora` model)
    from smora_cli.errors import SmoraError

    try:
        cli_evaluate()
    except SmoraError as e:  # a bad adapter or model_args: one line, as the smora command
        sys.stderr.write(f"error: {e}\n")
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
