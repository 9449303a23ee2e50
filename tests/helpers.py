"""What several test files share: the command line run in-process, the one error line it must
end with, and a machine standing in for a network."""

from typer.testing import CliRunner

from elsmachine.cli import app

runner = CliRunner()


def cli(*args):
    """Run ``els`` with ``args`` (any values, as text) in this process."""
    return runner.invoke(app, [str(a) for a in args])


def error_line(res) -> str:
    """The one line a failed command prints, checked to be the only error line and no traceback."""
    assert res.exit_code != 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return lines[0]


class FixedSize:
    """A machine with its patch size fixed, standing in for a network."""

    def __init__(self, m, k):
        self.m, self.k, self.schedule = m, k, m.schedule

    def denoise(self, x, t, labels=None):
        return self.m.denoise(x, t, patch_size=self.k, labels=labels)


def tiny_unet(conditional=False, size=8):
    """A small diffusers UNet2DModel (1 channel, 3 classes when conditional), seeded."""
    import diffusers
    import torch

    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=size, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        num_class_embeds=3 if conditional else None)
