"""The Triton kernel for LS and ELS (engines/gpu.py) against the float64 reference, run by
Triton's interpreter on CPU tensors: both paddings, conditional, traced, its splits merged."""

import os

import pytest
import torch

import elsmachine as em
from elsmachine.errors import InputError

pytest.importorskip("triton", reason="Triton is not installed (pip install triton; CI installs it)")
assert os.environ.get("TRITON_INTERPRET") == "1"  # set by conftest.py before anything imports Triton


def small(seed=0, C=2):
    """Tiny on purpose: the interpreter runs every program of the grid in Python."""
    g = torch.Generator().manual_seed(seed)
    Y = torch.rand(3, C, 3, 4, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(2, C, 3, 4, generator=g, dtype=torch.float64)
    return Y, x


@pytest.mark.parametrize("name,padding", [("ls", "zeros"), ("ls", "circular"), ("els", "zeros"), ("els", "circular")])
def test_kernel_matches_the_reference_traced(name, padding):
    Y, x = small()
    ref = em.make_machine(name, Y, patch_size=3, padding=padding, backend="explicit")
    gpu = em.make_machine(name, Y, patch_size=3, padding=padding, backend="triton")
    for t in (0.15, 0.8):
        torch.testing.assert_close(gpu.denoise(x, t), ref.denoise(x, t), rtol=0, atol=1e-12)
        (_, got), (_, want) = gpu.denoise_traced(x, t), ref.denoise_traced(x, t)
        assert torch.equal(got.source_image, want.source_image) and torch.equal(got.source_pixel, want.source_pixel)
        torch.testing.assert_close(got.weight, want.weight, rtol=0, atol=1e-12)
        torch.testing.assert_close(got.effective, want.effective, rtol=1e-10, atol=1e-10)


def test_kernel_conditional_and_a_window_past_the_edge():
    Y, x = small(seed=1, C=1)
    labels = torch.tensor([0, 1, 1])
    lab = torch.tensor([1, 0])
    for k in (1, 5):  # 5: windows reach past the 3-row image on both sides
        ref = em.make_machine("els", Y, labels=labels, patch_size=k, backend="explicit")
        gpu = em.make_machine("els", Y, labels=labels, patch_size=k, backend="triton")
        torch.testing.assert_close(gpu.denoise(x, 0.5, labels=lab), ref.denoise(x, 0.5, labels=lab), rtol=0, atol=1e-12)


def test_kernel_float32_is_float64_to_rounding_late_in_sampling():
    """Direct-form distances: at s = 0.05 the float32 answer stays within float32 rounding."""
    Y, x = small(seed=2)
    ref = em.make_machine("els", Y, patch_size=3, backend="explicit")
    gpu = em.make_machine("els", Y.float(), patch_size=3, backend="triton")
    t = 0.03
    want, got = ref.denoise(x, t), gpu.denoise(x.float(), t)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5)


def test_triton_backend_refuses_what_it_cannot_run():
    Y, x = small()
    with pytest.raises(InputError, match="IS has no Triton kernel"):
        em.make_machine("ideal", Y, backend="triton")
    m = em.make_machine("els", Y, patch_size=3, backend="triton")
    with pytest.raises(InputError, match="triton backend cannot run here: the kernel takes float32 or float64"):
        m.denoise(x.half(), 0.5)


def test_a_kernel_that_fails_is_one_error_or_under_auto_a_warning_and_the_attention_form(monkeypatch):
    from elsmachine.engines import gpu
    from elsmachine.errors import RunError
    from elsmachine.machines.local import PatchMachine

    class Broken:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                raise RuntimeError("PTX assembly failed\nmore lines")
            return launch

    monkeypatch.setattr(gpu, "_kernel", lambda: Broken())
    Y, x = small()
    with pytest.raises(RunError, match="the Triton kernel failed on cpu: RuntimeError: PTX assembly failed$"):
        em.make_machine("els", Y, patch_size=3, backend="triton").denoise(x, 0.5)
    # auto picks the kernel only for CUDA tensors: pretend these are, and the kernel breaks.
    auto = em.make_machine("els", Y, patch_size=3)
    monkeypatch.setattr(PatchMachine, "_triton_wanted", lambda self, x: True)
    with pytest.warns(UserWarning, match="the Triton kernel failed on cpu .* using the attention form instead"):
        got = auto.denoise(x, 0.5)
    want = em.make_machine("els", Y, patch_size=3, backend="explicit").denoise(x, 0.5)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: it keeps to the other form
        auto.denoise(x, 0.3)
