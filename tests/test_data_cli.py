"""The bundled data, .npz loading, and the command line end to end on tiny settings."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import elsmachine as em
from elsmachine.cli import app
from elsmachine.files import load_samples


def test_bundled_mnist5k():
    ds = em.load_dataset("mnist5k")
    assert ds.images.shape == (5000, 1, 32, 32) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (5000,) and ds.labels.dtype == torch.int64
    assert ds.images.min() == -1 and ds.images.max() == 1
    # padded from 28x28: a two-pixel frame of background
    assert (ds.images[:, :, :2] == -1).all() and (ds.images[:, :, :, -2:] == -1).all()
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    sub = em.load_dataset("mnist5k", per_class=3)
    assert len(sub) == 30 and torch.bincount(sub.labels).tolist() == [3] * 10
    assert len(em.load_dataset("mnist5k", limit=7)) == 7


def test_npz_formats(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(5, 8, 9), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=u8, labels=np.arange(5))
    ds = em.load_dataset(tmp_path / "a.npz")
    assert ds.images.shape == (5, 1, 8, 9) and ds.labels.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(ds.images[:, 0], torch.from_numpy(u8).float() / 127.5 - 1)
    rgb = rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "b.npz", images=rgb)
    ds = em.load_dataset(str(tmp_path / "b.npz"))
    assert ds.images.shape == (3, 3, 4, 4) and ds.labels is None
    torch.testing.assert_close(ds.images[1, 2, 3, 0].item(), rgb[1, 3, 0, 2] / 127.5 - 1, rtol=0, atol=1e-6)
    f = rng.uniform(-1, 1, size=(2, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "c.npz", images=f)
    assert torch.equal(em.load_dataset(tmp_path / "c.npz").images, torch.from_numpy(f))


def test_npz_errors(tmp_path):
    with pytest.raises(em.InputError, match="unknown dataset"):
        em.load_dataset("mnist6k")
    np.savez(tmp_path / "noimg.npz", pictures=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(em.InputError, match="no array named 'images'"):
        em.load_dataset(tmp_path / "noimg.npz")
    np.savez(tmp_path / "range.npz", images=np.full((2, 1, 3, 3), 3.0, np.float32))
    with pytest.raises(em.InputError, match=r"\[-1, 1\]"):
        em.load_dataset(tmp_path / "range.npz")
    np.savez(tmp_path / "lab.npz", images=np.zeros((2, 3, 3), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(em.InputError, match="labels"):
        em.load_dataset(tmp_path / "lab.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(em.InputError, match="bad.npz"):
        em.load_dataset(tmp_path / "bad.npz")


def test_cli_sample_end_to_end(tmp_path):
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(
        app,
        ["sample", "--per-class", "3", "--num", "3", "--steps", "3", "-k", "5,3,3", "--seed", "10", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert out.exists() and out.stat().st_size > 100
    d = load_samples(tmp_path / "grid.npz")
    assert d["images"].shape == (3, 1, 32, 32) and d["seeds"].tolist() == [10, 11, 12]
    assert d["labels"].tolist() == [0, 1, 2] and d["meta"]["machine"] == "els"
    # Every image can be reproduced from its seed alone.
    ds = em.load_dataset("mnist5k", per_class=3)
    m = em.ELSMachine(ds.images, labels=ds.labels)
    again = em.ddim_sample(m, em.seed_noise([11], (1, 32, 32)), steps=3, patch_sizes=[5, 3, 3], labels=torch.tensor([1]))
    np.testing.assert_allclose(d["images"][1], again[0].numpy(), atol=1e-6)


def test_cli_reports_bad_input_without_traceback(tmp_path):
    res = CliRunner().invoke(app, ["sample", "-k", "4", "--num", "1", "--steps", "1", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2
    assert "odd positive" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["sample", "--class", "12", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "class 12" in res.output


def test_els_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "elsmachine.cli", "sample", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--patch-schedule" in res.stdout
