"""The Triton kernel in the displacement form (engines/gpu_displacement.py) against the brute-force
float64 reference, run by Triton's interpreter on CPU tensors: LS and ELS, both paddings,
conditional, traced, several sizes in one pass, odd image sizes, one and three channels, float32
and float64; and the timed choice between the two Triton forms."""

import os

import pytest
import torch

import elsmachine as em
import reference as ref
from elsmachine.errors import InputError

pytest.importorskip("triton", reason="Triton is not installed (pip install triton; CI installs it)")
assert os.environ.get("TRITON_INTERPRET") == "1"  # set by conftest.py before anything imports Triton

BACKEND = "triton-displacement"


def tiny(seed=0, N=5, C=1, H=7, W=9, B=2, dtype=torch.float64):
    """Tiny on purpose: the interpreter runs every program of the grid in Python."""
    g = torch.Generator().manual_seed(seed)
    Y = torch.rand(N, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    return Y.to(dtype), x.to(dtype)


@pytest.mark.parametrize("name,padding,C,H,W,k", [
    ("ls", "zeros", 1, 7, 9, 5), ("ls", "circular", 3, 7, 9, 3),
    ("els", "zeros", 1, 7, 9, 3), ("els", "zeros", 3, 6, 6, 5),
    ("els", "circular", 1, 7, 9, 5), ("els", "circular", 3, 6, 6, 3)])
def test_matches_the_reference_traced(name, padding, C, H, W, k):
    Y, x = tiny(seed=C + k, C=C, H=H, W=W)
    m = em.make_machine(name, Y, patch_size=k, padding=padding, backend=BACKEND)
    t = 0.4
    got, trace = m.denoise_traced(x, t)
    want, top, entropy = ref.patch_machine(name, x, t, Y, k, padding, return_trace=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    # The best candidate is the reference's argmax (its image, its flat pixel).
    assert torch.equal(trace.source_image, top[..., 0]) and torch.equal(trace.source_pixel, top[..., 1])
    torch.testing.assert_close(trace.effective, entropy.exp(), rtol=1e-10, atol=1e-10)
    assert m.engine_name(x) == "Triton displacement"


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_conditional_with_labels_traced(padding):
    """Each query meets its class only; the trace names images of the full set."""
    Y, x = tiny(seed=7, N=6, H=6, W=7)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    lab = torch.tensor([1, 0])
    m = em.make_machine("els", Y, labels=labels, patch_size=3, padding=padding, backend=BACKEND)
    got, trace = m.denoise_traced(x, 0.3, labels=lab)
    for b, c in enumerate(lab.tolist()):
        idx = torch.nonzero(labels == c).flatten()
        want, top, _ = ref.patch_machine("els", x[b : b + 1], 0.3, Y[idx], 3, padding, return_trace=True)
        torch.testing.assert_close(got[b : b + 1], want, rtol=0, atol=1e-10)
        assert torch.equal(trace.source_image[b], idx[top[0, ..., 0]]) and torch.equal(trace.source_pixel[b], top[0, ..., 1])


@pytest.mark.parametrize("name,padding,C,H,W,sizes", [
    ("els", "zeros", 1, 6, 7, [1, 3, 5]), ("els", "circular", 3, 6, 6, [3, 5]), ("ls", "zeros", 3, 7, 9, [3, 7])])
def test_several_sizes_in_one_pass_equal_size_by_size(name, padding, C, H, W, sizes):
    """Zero-padded ELS: the sizes take different displacements (smaller windows have a larger
    interior), each folded into its own state from one squared-difference image per block."""
    Y, x = tiny(seed=11, C=C, H=H, W=W)
    m = em.make_machine(name, Y, patch_size=3, padding=padding, backend=BACKEND)
    assert m.engine(x).several_sizes
    t = 0.35
    together = m.denoise_sizes(x, t, sizes)
    for k, got in zip(sizes, together):
        torch.testing.assert_close(got, m.denoise(x, t, patch_size=k), rtol=0, atol=1e-12)
        torch.testing.assert_close(got, ref.patch_machine(name, x, t, Y, k, padding), rtol=0, atol=1e-10)


def near(seed, t, C, H, W, B=2):
    """float32 training images, two of them near-duplicates of others (within 0.3 s), and noisy
    images a Y_b + s eps as sampling makes them at time t: several candidates then weigh even
    late in sampling, where the logits scale as 1/s^2."""
    g = torch.Generator().manual_seed(seed)
    a, s = ref.coefficients(t)
    base = torch.rand(3, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    Y = torch.cat([base, base[:2] + 0.3 * s * torch.randn(2, C, H, W, generator=g, dtype=torch.float64)])
    x = a * base[:B] + s * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    return Y.float(), x.float()


@pytest.mark.parametrize("name,padding,C,H,W,k", [
    ("els", "zeros", 1, 7, 9, 3), ("els", "circular", 3, 6, 6, 5), ("ls", "circular", 3, 7, 9, 5)])
def test_float32_is_float64_to_rounding_late_in_sampling(name, padding, C, H, W, k, monkeypatch):
    """Against the float64 reference on the same float32 inputs and coefficients (a and s are
    float32 in a float32 call): what is left is the kernel's own float32 arithmetic, within 1e-5
    even at t = 0.02."""
    exact = ref.coefficients
    monkeypatch.setattr(ref, "coefficients", lambda t: tuple(float(torch.tensor(v).float()) for v in exact(t)))
    for t in (0.02, 0.3):
        Y, x = near(5, t, C, H, W)
        got = em.make_machine(name, Y, patch_size=k, padding=padding, backend=BACKEND).denoise(x, t)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref.patch_machine(name, x.double(), t, Y.double(), k, padding),
                                   rtol=0, atol=1e-5)


def test_blocks_and_splits_do_not_change_the_result():
    """One image per block and one split, or displacements packed into blocks and three splits:
    the same state to rounding (the splits merge exactly)."""
    from elsmachine.engines.gpu_displacement import TritonDisplacementStream
    from elsmachine.machines.candidates import rectangles

    Y, x = tiny(seed=3, N=2, H=4, W=5, C=3, B=1)
    a, s = torch.tensor([0.8], dtype=torch.float64), torch.tensor([0.6], dtype=torch.float64)
    rects = [rectangles("els", "circular", 4, 5, 3)]
    one = TritonDisplacementStream(x, Y, a, s, 3, "circular", rects, trace=True, block=1, splits=1).state
    packed = TritonDisplacementStream(x, Y, a, s, 3, "circular", rects, trace=True, block=16, splits=3).state
    torch.testing.assert_close(packed.finalize(torch.float64, trace=True).out,
                               one.finalize(torch.float64, trace=True).out, rtol=0, atol=1e-13)
    assert torch.equal(packed.source, one.source)


def test_the_timed_choice_keeps_the_faster_form_and_says_so(monkeypatch):
    """backend "triton" on a GPU times both forms on a slice of the bank at a size's first use
    and keeps the faster; the machine's describe() and engine_report() state the choice and the
    times, the settings that key results leave them out. A form that fails there is left out."""
    from elsmachine.experiments.compare import describe
    from elsmachine.machines import forms
    from elsmachine.machines.local import PatchMachine

    times = {"Triton": 2e-3, "Triton displacement": 1e-3}
    monkeypatch.setattr(forms, "_TRITON_CHOICES", {})
    monkeypatch.setattr(forms, "_best_time", lambda form, queries, bank, trace: times[form.name])
    monkeypatch.setattr(PatchMachine, "_time_triton", lambda self, x: True)  # as on a GPU
    Y, x = tiny(seed=2, N=4, H=5, W=5, B=1)
    m = em.make_machine("els", Y, patch_size=3, backend="triton")
    got = m.denoise(x, 0.5)
    torch.testing.assert_close(got, ref.patch_machine("els", x, 0.5, Y, 3, "zeros"), rtol=0, atol=1e-10)
    assert m.engine_name(x) == "Triton displacement"
    record = m.describe()["engine"]["cpu float64"]["triton"]["3"]
    assert record["form"] == "displacement" and record["seconds"] == {"direct": 2e-3, "displacement": 1e-3}
    assert "engine" not in describe(m) and describe(m, how=True)["engine"] == m.describe()["engine"]

    def broken(form, queries, bank, trace):
        if form.name == "Triton displacement":
            raise RuntimeError("out of shared memory")
        return times[form.name]

    monkeypatch.setattr(forms, "_best_time", broken)
    other = em.make_machine("ls", Y, patch_size=3, backend="triton")
    with pytest.warns(UserWarning, match="the Triton displacement kernel failed on cpu .* using the other Triton form"):
        other.denoise(x, 0.5)
    assert other.engine_name(x) == "Triton"
    assert other.engine_report()["cpu float64"]["triton"]["3"]["failed"] == {"displacement": "RuntimeError"}


def test_the_displacement_backend_refuses_what_it_cannot_run():
    Y, x = tiny()
    with pytest.raises(InputError, match="IS has no Triton kernel"):
        em.make_machine("ideal", Y, backend=BACKEND)
    m = em.make_machine("els", Y, patch_size=3, backend=BACKEND)
    with pytest.raises(InputError, match="triton-displacement backend cannot run here: the kernel takes float32"):
        m.denoise(x.half(), 0.5)
