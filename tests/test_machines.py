"""Every machine against the brute-force float64 reference, through the public API."""

import pytest
import reference as ref
import torch
from conftest import machine_options

import elsmachine as em

BACKENDS = ["native", "fused", "explicit"]



@pytest.mark.parametrize("C,H,W", [(1, 5, 6), (3, 4, 4)])
@pytest.mark.parametrize("t", [0.05, 0.4, 1.0])
def test_ideal_matches_reference(C, H, W, t, data):
    Y, x = data(C=C, H=H, W=W, B=3)
    out = em.IdealMachine(Y).denoise(x, t)
    assert out.dtype == torch.float64 and out.shape == x.shape
    torch.testing.assert_close(out, ref.ideal(x, t, Y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["ls", "els"])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("k", [1, 3, 5, 13])
@pytest.mark.parametrize("backend", BACKENDS)
def test_patch_machines_match_reference(kind, padding, k, backend, data):
    Y, x = data(N=3, C=1, H=5, W=6, B=2)
    cls = em.LocalMachine if kind == "ls" else em.ELSMachine
    m = cls(Y, patch_size=k, padding=padding, backend=backend)
    for t in (0.1, 0.7):
        torch.testing.assert_close(m.denoise(x, t), ref.patch_machine(kind, x, t, Y, k, padding), rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("k,H,W", [(7, 12, 13), (9, 11, 12)])
def test_segmented_window_sums_match_reference(padding, k, H, W, data):
    """Windows of 7 and more are summed by segments of k (several segments per row and column
    here), with footprint groups that share query pixels (zeros, over more than one block of 64
    images): both against the reference, in float64 and float32."""
    Y, x = data(N=66 if padding == "zeros" else 5, C=1, H=H, W=W, B=2, seed=k)
    m = em.ELSMachine(Y, patch_size=k, padding=padding, backend="native")
    for t in (0.15, 0.8):
        expect = ref.patch_machine("els", x, t, Y, k, padding)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-12)
        torch.testing.assert_close(m.denoise(x.float(), t).double(), expect, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["ls", "els"])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_every_size_from_one_pass_matches_the_reference(kind, padding, data):
    """denoise_sizes: each size as the reference gives it, in the order asked (unsorted, with a
    repeat), over more than one block of 64 images, sizes below and above the segment sums'
    threshold, per-image times and classes; float32 close to float64."""
    Y, x = data(N=66, C=2, H=6, W=7, B=2, seed=3)
    labels = torch.arange(66) % 2
    cls = em.LocalMachine if kind == "ls" else em.ELSMachine
    m = cls(Y, padding=padding, labels=labels, backend="native")
    sizes = [9, 1, 3, 7, 3, 11]
    t = torch.tensor([0.1, 0.95])
    lab = torch.tensor([0, 1])
    outs = m.denoise_sizes(x, t, sizes, labels=lab)
    outs32 = m.denoise_sizes(x.float(), t, sizes, labels=lab)
    assert len(outs) == len(sizes)
    for k, out, out32 in zip(sizes, outs, outs32):
        for b in range(2):
            expect = ref.patch_machine(kind, x[b : b + 1], float(t[b]), Y[labels == lab[b]], k, padding)
            torch.testing.assert_close(out[b : b + 1], expect, rtol=0, atol=1e-12)
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), out, rtol=0, atol=1e-4)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_one_pass_keeps_the_radius_and_falls_back_size_by_size(padding, data):
    Y, x = data(N=5, C=1, H=8, W=9, B=2, seed=2)
    near = em.make_machine("els-radius", Y, padding=padding, radii=2)
    for k, out in zip([3, 5, 7], near.denoise_sizes(x, 0.3, [3, 5, 7])):
        torch.testing.assert_close(out, near.denoise(x, 0.3, patch_size=k), rtol=0, atol=1e-12)
    attention = em.ELSMachine(Y, padding=padding, backend="fused")
    for k, out in zip([5, 3], attention.denoise_sizes(x, 0.3, [5, 3])):
        torch.testing.assert_close(out, attention.denoise(x, 0.3, patch_size=k), rtol=0, atol=0)
    with pytest.raises(em.InputError, match="at least one"):
        near.denoise_sizes(x, 0.3, [])
    with pytest.raises(em.InputError, match="odd"):
        near.denoise_sizes(x, 0.3, [3, 4])
    with pytest.raises(em.InputError, match="list of odd patch sizes"):
        near.denoise_sizes(x, 0.3, 5)


@pytest.mark.parametrize("kind", ["ls", "els"])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_three_channels_and_per_image_times(kind, padding, data):
    Y, x = data(N=3, C=3, H=4, W=5, B=2, seed=1)
    cls = em.LocalMachine if kind == "ls" else em.ELSMachine
    m = cls(Y, patch_size=3, padding=padding)
    t = torch.tensor([0.2, 0.9])
    out = m.denoise(x, t)
    for b in range(2):
        expect = ref.patch_machine(kind, x[b : b + 1], float(t[b]), Y, 3, padding)
        torch.testing.assert_close(out[b : b + 1], expect, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["ideal", "ls", "els"])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_class_conditional_matches_reference_on_the_class(name, padding, data):
    Y, x = data(N=6, C=1, H=4, W=5, B=3, seed=2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    m = em.make_machine(name, Y, labels=labels, **machine_options(name, padding=padding, patch_size=3))
    q = torch.tensor([2, 0, 2])
    out = m.denoise(x, 0.3, labels=q)
    for b in range(3):
        Yc = Y[labels == q[b]]
        if name == "ideal":
            expect = ref.ideal(x[b : b + 1], 0.3, Yc)
        else:
            expect = ref.patch_machine(name, x[b : b + 1], 0.3, Yc, 3, padding)
        torch.testing.assert_close(out[b : b + 1], expect, rtol=0, atol=1e-12)
    # Without labels the machine uses every training image.
    torch.testing.assert_close(m.denoise(x, 0.3),
                               em.make_machine(name, Y, **machine_options(name, padding=padding, patch_size=3)).denoise(x, 0.3))


@pytest.mark.parametrize("backend,bound", [("native", 2e-5), ("explicit", 1e-4), ("fused", 3e-3)])
def test_float32_follows_float64_closely(backend, bound):
    """On noisy held-out digits (the inputs a sampler meets), float32 stays near float64.
    The attention form loses more: its logits come from an expanded square; PyTorch's fused
    kernel loses most (measured up to 1.5e-3), which is why it is opt-in."""
    import math

    train = em.load_dataset("mnist5k", per_class=10)
    clean = em.load_dataset("mnist5k").images[-2:].double()  # not among the first 10 per class
    g = torch.Generator().manual_seed(0)
    machines = [em.LocalMachine(train.images, patch_size=5, backend=backend),
                em.ELSMachine(train.images, patch_size=5, backend=backend),
                em.ELSMachine(train.images, patch_size=3, padding="circular", backend=backend)]
    if backend != "native":
        machines.append(em.IdealMachine(train.images, backend=backend))
    for m in machines:
        for t in (0.05, 0.5, 1.0):
            a = math.cos(t / 1.008 * math.pi / 2)
            x = a * clean + math.sqrt(1 - a * a) * torch.randn(clean.shape, generator=g, dtype=torch.float64)
            lo = m.denoise(x.float(), t)
            assert lo.dtype == torch.float32
            assert (lo.double() - m.denoise(x, t)).abs().max() < bound


def test_machine_output_follows_input_device_and_dtype(data):
    Y, x = data(N=4)
    m = em.ELSMachine(Y.float(), patch_size=3)
    assert m.denoise(x.float(), 0.5).dtype == torch.float32
    assert m.denoise(x, 0.5).dtype == torch.float64
    assert m.denoise(x, 0.5).device == x.device


def test_compiled_kernel_is_used_by_default_and_the_fallback_agrees(data):
    from elsmachine.engines import native

    assert native.status() == "loaded", native.status()
    Y, x = data(N=3, C=1, H=6, W=6, B=1)
    auto = em.ELSMachine(Y, patch_size=3).denoise(x, 0.3)
    torch.testing.assert_close(auto, em.ELSMachine(Y, patch_size=3, backend="native").denoise(x, 0.3), rtol=0, atol=0)
    torch.testing.assert_close(auto, em.ELSMachine(Y, patch_size=3, backend="fused").denoise(x, 0.3), rtol=0, atol=1e-12)


def test_switching_the_kernel_off_falls_back_to_the_attention_engine():
    import os
    import subprocess
    import sys

    code = (
        "import torch, elsmachine as em\n"
        "from elsmachine.engines import native\n"
        "assert native.library() is None and 'ELSMACHINE_NATIVE=0' in native.status()\n"
        "g = torch.Generator().manual_seed(0)\n"
        "Y = torch.rand(3, 1, 6, 6, generator=g, dtype=torch.float64)\n"
        "x = torch.randn(1, 1, 6, 6, generator=g, dtype=torch.float64)\n"
        "print(repr(em.ELSMachine(Y, patch_size=3).denoise(x, 0.5).sum().item()))\n"
        "try:\n"
        "    em.ELSMachine(Y, patch_size=3, backend='native').denoise(x, 0.5)\n"
        "except em.InputError as e:\n"
        "    print('refused:', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, ELSMACHINE_NATIVE="0"))
    assert res.returncode == 0, res.stderr
    total, refused = res.stdout.strip().splitlines()
    assert refused.startswith("refused:") and "native backend" in refused
    g = torch.Generator().manual_seed(0)
    Y = torch.rand(3, 1, 6, 6, generator=g, dtype=torch.float64)
    x = torch.randn(1, 1, 6, 6, generator=g, dtype=torch.float64)
    native_total = em.ELSMachine(Y, patch_size=3, backend="native").denoise(x, 0.5).sum().item()
    assert abs(float(total) - native_total) < 1e-12


def test_approximate_mode_is_exact_elsmachine_on_the_nearest_images(data):
    Y, x = data(N=6, C=1, H=5, W=6, B=2, seed=4)
    a, _ = ref.coefficients(0.3)
    m = em.ELSMachine(Y, patch_size=3, approx_images=3)
    out, tr = m.denoise_traced(x, 0.3)
    for b in range(2):
        near = torch.topk(((x[b] - a * Y) ** 2).flatten(1).sum(1), 3, largest=False).indices.sort().values
        torch.testing.assert_close(out[b : b + 1], ref.patch_machine("els", x[b : b + 1], 0.3, Y[near], 3, "zeros"),
                                   rtol=0, atol=1e-12)
        assert set(tr.source_image[b].unique().tolist()) <= set(near.tolist())
    exact = em.ELSMachine(Y, patch_size=3).denoise(x, 0.3)
    torch.testing.assert_close(em.ELSMachine(Y, patch_size=3, approx_images=6).denoise(x, 0.3), exact, rtol=0, atol=0)
    with pytest.raises(em.InputError, match="approx_images"):
        em.ELSMachine(Y, patch_size=3, approx_images=0)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("k,radius", [(3, 1), (3, 2), (5, 2), (1, 3)])
def test_a_radius_matches_a_reference_with_near_candidates_only(padding, k, radius, monkeypatch, data):
    """els-radius keeps the candidates within radius pixels of the query along each axis
    (around the torus for circular), and nothing else changes."""
    H, W = 8, 9
    exact = ref.candidates

    def near(kind, i, j, H_, W_, k_, padding_):
        def dist(a, b, n):
            d = abs(a - b)
            return min(d, n - d) if padding_ == "circular" else d

        return [(r, c) for r, c in exact(kind, i, j, H_, W_, k_, padding_) if dist(r, i, H_) <= radius and dist(c, j, W_) <= radius]

    monkeypatch.setattr(ref, "candidates", near)
    Y, x = data(N=3, C=1, H=H, W=W, B=2, seed=radius)
    m = em.make_machine("els-radius", Y, patch_size=k, padding=padding, radii=radius)
    for t in (0.1, 0.7):
        torch.testing.assert_close(m.denoise(x, t), ref.patch_machine("els", x, t, Y, k, padding), rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_radius_zero_is_ls_and_a_covering_radius_is_exact(padding, data):
    Y, x = data(N=5, C=1, H=7, W=6, B=2)
    for k in (3, 5):
        els = em.ELSMachine(Y, patch_size=k, padding=padding)
        torch.testing.assert_close(em.make_machine("els-radius", Y, patch_size=k, padding=padding, radii=0).denoise(x, 0.3),
                                   em.LocalMachine(Y, patch_size=k, padding=padding).denoise(x, 0.3), rtol=0, atol=1e-12)
        torch.testing.assert_close(em.make_machine("els-radius", Y, patch_size=k, padding=padding, radii=7).denoise(x, 0.3),
                                   els.denoise(x, 0.3), rtol=0, atol=1e-12)


def test_radius_errors(data):
    Y, _ = data(N=4)
    with pytest.raises(em.InputError, match="radii must be non-negative"):
        em.make_machine("els-radius", Y, radii=-1)
    with pytest.raises(em.InputError, match="ls machine has no radii"):
        em.LocalMachine(Y, radii=2)
    with pytest.raises(em.InputError, match="els machine has no approx_radius"):
        em.ELSMachine(Y, approx_radius=2)
    with pytest.raises(em.InputError, match="has no radii"):
        em.make_machine("ideal", Y, radii=2)
