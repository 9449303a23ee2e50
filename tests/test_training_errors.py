"""Training that diverges stops with the project's run error, in the library and on the command
line (one line, exit code 1), and leaves the last good checkpoint in place."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import elsmachine as em
from elsmachine.cli import app
from elsmachine.networks import NetConfig
from elsmachine.networks.training import TrainConfig, train

run = CliRunner()

TINY = NetConfig(arch="resnet", width=8, depth=2, num_classes=0, emb_dim=16)
# Adam moves every weight by about the learning rate, so 1e30 overflows float32 at the next step.
HUGE_LR = 1e30
DIVERGED = r"training diverged at step \d+ \(loss (-?inf|nan)\); lower the learning rate"


def test_diverging_training_is_a_run_error_and_keeps_the_last_good_checkpoint(tmp_path):
    data = em.load_dataset("mnist5k", limit=4)
    # One step per epoch, so the first (finite) step is checkpointed before the loss blows up.
    cfg = TrainConfig(epochs=5, batch_size=4, lr=HUGE_LR)
    with pytest.raises(em.RunError, match=f"^{DIVERGED}$"):
        train(TINY, cfg, data, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["progress"]
    assert 1 <= saved["step"] < 5 and not saved["done"]
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "model.safetensors")).values())


def test_cli_diverging_training_is_one_line_and_exit_1(tmp_path):
    res = run.invoke(app, ["train", "--limit", "4", "--width", "8", "--depth", "2", "--epochs", "5",
                           "--batch-size", "4", "--lr", str(HUGE_LR), "--device", "cpu", "--out", str(tmp_path / "net")])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert re.fullmatch(f"error: {DIVERGED}", lines[0]), lines[0]
