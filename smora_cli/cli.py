"""The `smora` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import os
import sys

import typer

from smora_cli import __version__
from smora_cli.errors import SmoraError

app = typer.Typer(
    name="smora",
    help="Multi-task fine-tuning with rank-wise Mixture-of-Experts LoRA adapters "
    "(SMoRA, FlyLoRA, MoRE and their baselines).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smora {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """smora: train, evaluate, merge and study rank-expert adapters."""


def main() -> None:
    """Console entry point: map smora's errors to one line and an exit code."""
    try:
        app()
    except SmoraError as e:
        if os.environ.get("SMORA_DEBUG"):
            raise
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        typer.echo("(set SMORA_DEBUG=1 for the full traceback)", err=True)
        sys.exit(e.exit_code)
