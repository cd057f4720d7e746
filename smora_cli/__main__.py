"""`python -m smora_cli` (what `accelerate launch -m smora_cli ...` runs)."""

from smora_cli.cli import main

main()
