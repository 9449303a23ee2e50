"""Scale on one machine: a bank of 200,000 uint8 images of 3 x 32 x 32 (600 MB; 2.5 GB as
float32) runs through ELS in one process within 1.5 GiB of resident memory, and a uint8 bank
answers exactly what its float32 conversion answers."""

import re
import subprocess
import warnings
import sys
from pathlib import Path

import pytest
import torch

import elsmachine as em

WORKER = Path(__file__).parent / "workers" / "big_bank.py"


def test_200k_images_stay_under_one_and_a_half_gib():
    # els-radius at radius 1 keeps the test short; the bank streams through the same blocks as exact ELS.
    proc = subprocess.run([sys.executable, str(WORKER), "200000", "1", "1"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = float(re.search(r"peak_gib=([0-9.]+)", proc.stdout).group(1))
    assert peak < 1.5, proc.stdout


@pytest.mark.parametrize("name", ["ideal", "ls", "els", "nearest", "wiener", "stationary", "locality", "pspc"])
def test_a_uint8_bank_is_its_float32_conversion(name, tmp_path):
    import numpy as np

    g = torch.Generator().manual_seed(0)
    U = torch.randint(0, 256, (300, 3, 8, 8), generator=g, dtype=torch.uint8)
    F = U.float() / 127.5 - 1  # what the dataset loaders make of uint8 files
    x = torch.randn(2, 3, 8, 8, generator=g)
    kw = {"patch_size": 3} if name in ("ls", "els", "pspc") else {}
    small = 1 << 20  # a 1 MiB budget: the uint8 bank streams in blocks
    want = em.make_machine(name, F, memory_budget=small, **kw).denoise(x, 0.4)
    assert torch.equal(em.make_machine(name, U, memory_budget=small, **kw).denoise(x, 0.4), want)
    assert torch.equal(em.make_machine(name, U.numpy(), memory_budget=small, **kw).denoise(x, 0.4), want)
    mm = np.memmap(tmp_path / "bank.u8", dtype=np.uint8, mode="w+", shape=tuple(U.shape))
    mm[:] = U.numpy()
    assert torch.equal(em.make_machine(name, mm, memory_budget=small, **kw).denoise(x, 0.4), want)
    mm.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only map is shared without a word
        ro = np.memmap(tmp_path / "bank.u8", dtype=np.uint8, mode="r", shape=tuple(U.shape))
        assert torch.equal(em.make_machine(name, ro, memory_budget=small, **kw).denoise(x, 0.4), want)


def test_other_integer_images_are_refused():
    from elsmachine.errors import InputError

    with pytest.raises(InputError, match="floating point in \\[-1, 1\\] or uint8 in 0..255, got dtype torch.int64"):
        em.make_machine("els", torch.zeros(2, 1, 4, 4, dtype=torch.long), patch_size=3)


def test_a_long_call_reports_how_far_it_has_streamed_the_bank():
    g = torch.Generator().manual_seed(0)
    U = torch.randint(0, 256, (2000, 1, 16, 16), generator=g, dtype=torch.uint8)
    m = em.make_machine("els", U, patch_size=3, memory_budget=1 << 20, backend="native")
    seen = []
    m.on_candidates = lambda done, total: seen.append((done, total))
    m.denoise(torch.randn(1, 1, 16, 16, generator=g), 0.5)
    assert len(seen) > 1 and seen[-1] == (2000, 2000) and [d for d, _ in seen] == sorted(d for d, _ in seen)
