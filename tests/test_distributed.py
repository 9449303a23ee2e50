"""A sharded candidate bank (distributed=True) under two gloo processes returns, on every rank,
what one process holding every training image returns: every machine, both paddings, every
engine, conditional and not, traced."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import elsmachine as em
from elsmachine.errors import InputError

WORKER = Path(__file__).parent / "workers" / "distributed_cases.py"
sys.path.insert(0, str(WORKER.parent))
import distributed_cases  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), str(out)], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_every_rank_returns_what_one_process_returns(ranks):
    single = distributed_cases.results(distributed=False)
    assert int(ranks[0]["world"]) == 2
    for key, want in single.items():
        for r, got in enumerate(ranks):
            if isinstance(want, str):  # describe(), repr, fingerprint: the full set's, on every rank
                assert got[key] == want, (key, r, got[key], want)
            elif key.endswith("-source"):  # the best candidate: the same image and pixel
                assert torch.equal(got[key], want), (key, r)
            else:
                torch.testing.assert_close(got[key], want, rtol=0, atol=1e-12, msg=f"{key} on rank {r}")


def test_distributed_needs_a_process_group():
    Y, labels, _ = distributed_cases.data()
    with pytest.raises(InputError, match="torch.distributed process group"):
        em.make_machine("els", Y, patch_size=3, distributed=True)


# ----------------------------------------------------------------------------- the commands under torchrun
def torchrun(args, cwd, nproc=2):
    """``els ARGS`` in ``nproc`` gloo processes, in a session of its own (to be killed whole)."""
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", ELSMACHINE_NATIVE="0", COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc), "-m", "elsmachine.cli", *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def single(args, cwd):
    import os

    env = dict(os.environ, ELSMACHINE_NATIVE="0", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "elsmachine.cli", *map(str, args)], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)


def finished(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_sample_under_torchrun_matches_one_process(tmp_path):
    args = ["sample", "--limit", "40", "-n", "3", "--steps", "4", "--trace"]
    finished(torchrun(args + ["-o", "two.png"], tmp_path))
    assert single(args + ["-o", "one.png"], tmp_path).returncode == 0
    from elsmachine.files import load_samples

    two, one = load_samples(tmp_path / "two.npz"), load_samples(tmp_path / "one.npz")
    torch.testing.assert_close(torch.as_tensor(two["images"]), torch.as_tensor(one["images"]), rtol=0, atol=1e-4)
    # The best candidate of every pixel has the same weight; it is the same patch except where
    # several equally good ones tie to float32 rounding (one patch found in several images).
    for f in ("trace_weight", "trace_effective"):
        torch.testing.assert_close(torch.as_tensor(two[f]), torch.as_tensor(one[f]), rtol=1e-3, atol=1e-4)
    same = (two["trace_source_image"] == one["trace_source_image"]) & (two["trace_source_pixel"] == one["trace_source_pixel"])
    assert same.mean() > 0.99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "one.png", "two.npz", "two.png"]


def _results(folder):
    import csv

    with open(folder / "results.csv") as f:
        return {r["seed"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("parallel", ["bank", "seeds"])
def test_compare_under_torchrun_matches_one_process_and_resumes_after_a_kill(tmp_path, parallel):
    import os
    import signal
    import time

    # enough seeds and steps that the kill after the second finished seed lands mid-run
    args = ["compare", "--model", "mnist5k-resnet", "--per-class", "2", "--seeds", "8", "--steps", "12",
            "--machines", "ideal,els", "--patch-schedule", "3"]
    seeds = tmp_path / "two" / "seeds"
    proc = torchrun(args + ["--out", "two", "--parallel", parallel], tmp_path)
    t0 = time.time()
    while time.time() - t0 < 300 and proc.poll() is None and len(list(seeds.glob("*.npz")) if seeds.is_dir() else []) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in seeds.glob("*.npz")}
    assert 0 < len(done) < 8
    finished(torchrun(args + ["--out", "two", "--parallel", parallel], tmp_path))
    assert {p.name: p.stat().st_mtime_ns for p in seeds.glob("*.npz") if p.name in done} == done  # not repeated
    assert single(args + ["--out", "one"], tmp_path).returncode == 0
    two, one = _results(tmp_path / "two"), _results(tmp_path / "one")
    assert sorted(two) == sorted(one) == [str(i) for i in range(8)]  # nothing lost
    for seed, row in one.items():
        for col in ("r_ideal", "r_els", "mse_els"):
            assert abs(float(two[seed][col]) - float(row[col])) < 1e-4, (seed, col)
    assert not list((tmp_path / "two").rglob("*.tmp"))


@pytest.mark.parametrize("parallel", ["bank", "seeds"])
def test_calibrate_under_torchrun_gives_the_schedule_of_one_process(tmp_path, parallel):
    args = ["calibrate", "--model", "mnist5k-resnet", "--per-class", "2", "--sizes", "3,5,7", "--seeds", "4",
            "--steps", "3"]
    finished(torchrun(args + ["-o", "two.json", "--parallel", parallel], tmp_path))
    assert single(args + ["-o", "one.json"], tmp_path).returncode == 0
    two, one = em.PatchSchedule.load(tmp_path / "two.json"), em.PatchSchedule.load(tmp_path / "one.json")
    assert two.sizes == one.sizes and two.meta["per_seed"] == one.meta["per_seed"]
    assert not (tmp_path / "two.json.parts").exists()
