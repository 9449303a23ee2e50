"""The ``els`` command line: one module per command group, each thin (parse the options, call
the library, print). Options are resolved here once (device, dtype, seeds, classes); the
library below only sees tensors."""

from __future__ import annotations

import sys

import typer

from ..errors import InputError
from . import bench, experiments, mosaic, sample, train
from .common import console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The equivariant local score machine: closed-form models of convolutional diffusion models.",
)
app.command("sample")(sample.sample)
app.command("train")(train.train)
app.command("calibrate")(experiments.calibrate)
app.command("compare")(experiments.compare)
app.command("mosaic")(mosaic.mosaic)
app.command("novelty")(mosaic.novelty)
app.command("bench")(bench.bench)


def main() -> None:
    try:
        app()
    except InputError as e:  # raised while typer parses (e.g. from callbacks)
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)
