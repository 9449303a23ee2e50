"""The ``els`` command line: one module per command group, each thin (parse the options, call
the library, print). Options are resolved here once (device, dtype, seeds, classes); the
library below only sees tensors.

Every failure ends in one line on stderr: a usage error or bad input (an unknown option, a value
of the wrong kind, an :class:`~elsmachine.InputError`) with exit code 2, a run that cannot finish
(a :class:`~elsmachine.RunError`: a full disk, a failing network) with exit code 1.
"""

from __future__ import annotations

import sys
import warnings

import typer
from typer.core import TyperGroup

from ..errors import InputError, RunError
from . import bench, calibrate, compare, explore, mosaic, novelty, sample, sensitivity, single, train
from .common import console

# typer's own usage errors (unknown option, bad value) derive from this, whichever click it uses.
_USAGE = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _fail(message: str, code: int):
    message = " ".join(ln.strip() for ln in str(message).splitlines() if ln.strip())
    console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def _warn(message, category, filename, lineno, file=None, line=None):
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _leave_group() -> None:
    """Under torchrun: close the process group before the interpreter exits (gloo's threads
    abort the process when it is left open)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class OneLineErrors(TyperGroup):
    """The command group, with every error as one line and its exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default", UserWarning)
                warnings.showwarning = _warn
                rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                  **extra)
        except _USAGE as e:
            _fail(e.format_message().replace("\n", " "), e.exit_code)
        except InputError as e:
            _fail(str(e), 2)
        except RunError as e:
            _fail(str(e), 1)
        except typer.Abort:
            _fail("aborted", 1)
        finally:
            _leave_group()
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="The equivariant local score machine: closed-form models of convolutional diffusion models.",
)
app.command("sample")(sample.sample)
app.command("train")(train.train)
app.command("calibrate")(calibrate.calibrate)
app.command("compare")(compare.compare)
app.command("sensitivity")(sensitivity.sensitivity)
app.command("mosaic")(mosaic.mosaic)
app.command("novelty")(novelty.novelty)
app.command("explore")(explore.explore)
app.command("bench")(bench.bench)
app.command("single")(single.single)


def main() -> None:
    app()
