"""The `smora` application: its commands (one module each under smora_cli/commands/) and the
entry point that reports every error as one line and an exit code (smora_cli/errors.py)."""

from __future__ import annotations

import os
import sys

import typer

from smora_cli import __version__
from smora_cli.commands import eval as eval_module
from smora_cli.commands import merge, sweep, train
from smora_cli.errors import click_errors, exit_code, one_line, report
from smora_cli.utils.signals import interrupting_signals

app = typer.Typer(
    name="smora",
    help="Multi-task fine-tuning with rank-wise Mixture-of-Experts LoRA adapters "
    "(SMoRA, FlyLoRA, MoRE and their baselines).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command("train", epilog=train.EXAMPLES)(train.train)
app.command("eval", epilog=eval_module.EXAMPLES)(eval_module.eval_command)
app.command("merge", epilog=merge.EXAMPLES)(merge.merge)
app.command("sweep-granularity", epilog=sweep.EXAMPLES)(sweep.sweep_granularity)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smora {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """smora: train, evaluate, merge and study rank-expert adapters."""


def main() -> None:
    """Console entry point: run the command; an error ends it as `errors.REPORTS` says."""
    try:
        with interrupting_signals():
            code = app(prog_name="smora", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as e:  # `smora` alone: its help, exit 2 as click
        if e.format_message():  # empty when rich printed the help already
            typer.echo(e.format_message())
        sys.exit(e.exit_code)
    except BaseException as e:
        entry = report(e)
        if entry is None or os.environ.get("SMORA_DEBUG"):
            raise
        typer.secho(f"error: {one_line(e)}", fg=typer.colors.RED, err=True)
        if entry.unexpected:
            typer.echo("(set SMORA_DEBUG=1 for the full traceback)", err=True)
        sys.exit(exit_code(e))
    sys.exit(code if isinstance(code, int) else 0)
