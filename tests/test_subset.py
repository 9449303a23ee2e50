"""The subset mode against brute force in float64 (docs/theory.md, "Subsets with a bound"): the
whole set is exact, the pooled and patch lower bounds lie below every distance, the reported
bound lies above the exact share of the softmax left out and bounds the output's error, the
bound mode reaches its target, classes are kept, and bad values are refused."""

import math

import pytest
import reference as ref
import torch
import torch.nn.functional as F

import elsmachine as em
from elsmachine.machines.subset import patch_lower_bounds


def near_queries(Y, t, rows, seed=0):
    """a Y_n + s eps for the images ``rows`` of Y (or other images given as a tensor)."""
    a, s = ref.coefficients(t)
    base = Y[rows] if not isinstance(rows, torch.Tensor) else rows
    g = torch.Generator().manual_seed(seed)
    return a * base.double() + s * torch.randn(base.shape, generator=g, dtype=torch.float64)


def pooled_bound(x, y, a, f):
    """sum over f x f blocks (edge blocks smaller) and channels of n_b (mean x - a mean y)^2 +
    (|x - mean x| - a |y - mean y|)^2, block by block."""
    C, H, W = x.shape
    total = 0.0
    for c in range(C):
        for i in range(0, H, f):
            for j in range(0, W, f):
                bx, by = x[c, i : i + f, j : j + f].double(), y[c, i : i + f, j : j + f].double()
                n = bx.numel()
                total += n * float(bx.mean() - a * by.mean()) ** 2
                total += float((bx - bx.mean()).norm() - a * (by - by.mean()).norm()) ** 2
    return total


def patch_logits(kind, x, t, Y, k, padding):
    """Logits [B, HW, N, HW] of every (query pixel, image, candidate pixel), -inf where the pixel
    does not see the candidate (DESIGN.md's table, footprints from the reference)."""
    a, s = ref.coefficients(t)
    x, Y = x.double(), Y.double()
    B, _, H, W = x.shape
    N, h = Y.shape[0], k // 2

    def patches(v):
        if padding == "circular":
            v = v[:, :, (torch.arange(H + 2 * h) - h) % H][:, :, :, (torch.arange(W + 2 * h) - h) % W]
        else:
            v = F.pad(v, (h, h, h, h))
        return F.unfold(v, k).transpose(1, 2)  # [n, HW, C k k]

    sees = torch.zeros(H * W, H * W, dtype=torch.bool)
    for i in range(H):
        for j in range(W):
            for r, c in ref.candidates(kind, i, j, H, W, k, padding):
                sees[i * W + j, r * W + c] = True
    Px, Py = patches(x), patches(Y).reshape(N * H * W, -1)
    out = torch.empty(B, H * W, N, H * W, dtype=torch.float64)
    for b in range(B):
        d = torch.cdist(Px[b], a * Py, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        out[b] = (-d / (2 * s * s)).view(H * W, N, H * W).masked_fill(~sees.view(H * W, 1, H * W), -math.inf)
    return out


def left_out_share(logits, keep):
    """The exact share of each row's softmax (per pixel for patches) on the images not in
    ``keep[b]``: [B] or [B, HW]."""
    shares = []
    for b, kept in enumerate(keep):
        z = logits[b]
        out = torch.ones(z.shape[-2 if z.dim() == 3 else -1], dtype=torch.bool)
        out[kept] = False
        if z.dim() == 1:
            shares.append(torch.exp(torch.logsumexp(z[out], 0) - torch.logsumexp(z, 0)))
        else:
            shares.append(torch.exp(torch.logsumexp(z[:, out].flatten(1), 1) - torch.logsumexp(z.flatten(1), 1)))
    return torch.stack(shares)


def check(machine, x, t, Y, M, patch=None):
    """Denoise x one row at a time; assert each row's reported bound lies above the exact left-out
    share and that the error against the exact machine is within bound * the value range.
    Returns (bounds, exact shares)."""
    a, s = ref.coefficients(t)
    rng = float(Y.max() - Y.min())
    bounds, exact = [], []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        out = machine.denoise(xb, t)
        calls = len(machine.subset_report)
        bound = machine.subset_report[-1]["bound"]
        size = machine.subset_report[-1]["size"]
        assert size == min(M, Y.shape[0])
        keep = machine.subset_ranking(xb[0], t)[:size]
        if patch is None:
            z = -((xb - a * Y.double()) ** 2).flatten(1).sum(1) / (2 * s * s)
            full = torch.einsum("n,nchw->chw", torch.softmax(z, 0), Y.double())[None]
            shares = left_out_share(z[None], [keep])
        else:
            kind, k, padding = patch
            lg = patch_logits(kind, xb, t, Y, k, padding)
            w = torch.softmax(lg.flatten(2), -1).view_as(lg)
            full = torch.einsum("bqnp,ncp->bcq", w, Y.double().flatten(2)).view_as(xb)
            shares = left_out_share(lg, [keep]).view(1, *xb.shape[-2:])
        # the machine measures the same share by streaming the rest of the class
        torch.testing.assert_close(machine.left_out_share(xb, t), shares, rtol=1e-6, atol=1e-10)
        assert len(machine.subset_report) == calls
        share = float(shares.max())
        assert share <= bound * (1 + 1e-9) + 1e-300, (t, share, bound)
        assert float((out - full).abs().max()) <= bound * rng + 1e-12, (t, bound)
        bounds.append(bound)
        exact.append(share)
    return bounds, exact


def test_the_pooled_and_patch_lower_bounds_lie_below_every_distance(data):
    Y, x = data(N=7, C=2, H=6, W=5, B=2, seed=4)
    ds = near_queries(Y, 0.4, [1, 5])
    for f in (1, 2, 3, 4, 6):
        m = em.make_machine("ideal", Y, subset=3, subset_pool=f)
        for q in (x[0], ds[0]):
            a_t = ref.coefficients(0.4)[0]  # the screen ranks by the bound at the call's a
            want = sorted(range(7), key=lambda n: (pooled_bound(q, Y[n], a_t, f), n))
            assert m.subset_ranking(q, 0.4).tolist() == want
            for a in (0.05, 0.6, 1.0):
                for n in range(7):
                    lb = pooled_bound(q, Y[n], a, f)
                    assert lb <= float(((q - a * Y[n]) ** 2).sum()) * (1 + 1e-12)
                    if f == 1:  # single pixels: the bound is the distance
                        assert lb == pytest.approx(float(((q - a * Y[n]) ** 2).sum()), rel=1e-12)
    for kind, padding, k in (("ls", "zeros", 3), ("els", "zeros", 3), ("els", "zeros", 5), ("els", "circular", 3),
                             ("els", "circular", 7)):
        a, s = ref.coefficients(0.5)
        lb, counts = patch_lower_bounds(ds[0], Y, a, k, kind, padding)
        lg = patch_logits(kind, ds[:1], 0.5, Y, k, padding)[0]  # [HW, N, HW]
        dist = (-lg * 2 * s * s).amin(-1)  # the nearest candidate of each image, per query pixel
        assert bool((lb.flatten(1).T <= dist * (1 + 1e-9)).all()), (kind, padding, k)
        assert counts.flatten().tolist() == torch.isfinite(lg[:, 0]).sum(-1).double().tolist()


def test_the_whole_set_is_exact(data):
    Y, x = data(N=6, C=1, H=5, W=6, B=3, seed=2)
    for name, opts in (("ideal", {}), ("ls", {"patch_size": 3}), ("els", {"patch_size": 3}),
                       ("els", {"patch_size": 3, "padding": "circular"})):
        exact = em.make_machine(name, Y, **opts).denoise(x, 0.5)
        for whole in (6, 10, 1.0):
            m = em.make_machine(name, Y, subset=whole, **opts)
            torch.testing.assert_close(m.denoise(x, 0.5), exact, rtol=0, atol=1e-13)
            assert m.subset_report[-1] == {"t": 0.5, "size": 6, "mean_size": 6.0, "of": 6, "bound": 0.0,
                                           "mean_bound": 0.0}
        m = em.make_machine(name, Y, subset_bound=1e-300, **opts)  # no prefix but the whole reaches it
        torch.testing.assert_close(m.denoise(x, 0.5), exact, rtol=0, atol=1e-13)
        assert m.subset_report[-1]["size"] == 6 and m.subset_report[-1]["bound"] == 0.0


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 1.0])
def test_the_reported_bound_holds_on_random_data(data, t):
    Y, x = data(N=16, C=2, H=5, W=4, B=1, seed=1)
    x = torch.cat([near_queries(Y, t, [3]), x * 0.5])
    for M in (4, 11):
        check(em.make_machine("ideal", Y, subset=M, subset_pool=2), x, t, Y, M)
        for kind, padding, k, backend in (("ls", "zeros", 3, "auto"), ("els", "zeros", 3, "auto"),
                                          ("els", "circular", 3, "auto"), ("els", "zeros", 3, "explicit")):
            m = em.make_machine(kind, Y, patch_size=k, padding=padding, subset=M, backend=backend)
            check(m, x, t, Y, M, (kind, k, padding))


def test_the_reported_bound_holds_on_digits(mnist):
    Y32 = mnist.images[:300]
    Y = F.avg_pool2d(mnist.images[:24], 2)  # 16 x 16 digits, their background kept
    held = F.avg_pool2d(mnist.images[1000:1001], 2)
    loose = {}
    for t in (0.1, 0.4, 0.8):
        q32 = torch.cat([near_queries(Y32, t, [7]), near_queries(Y32, t, mnist.images[1000:1001])])
        check(em.make_machine("ideal", Y32, subset=30), q32, t, Y32, 30)
        q = torch.cat([near_queries(Y, t, [5], seed=1), near_queries(Y, t, held, seed=2)])
        check(em.make_machine("ls", Y, patch_size=5, subset=8), q[:1], t, Y, 8, ("ls", 5, "zeros"))
        b, e = check(em.make_machine("els", Y, patch_size=5, subset=8), q, t, Y, 8, ("els", 5, "zeros"))
        loose[t] = (max(b), max(e))
    # IS memorises: at low noise the pooled bound of a query near a training image is tight
    m = em.make_machine("ideal", Y32, subset=30)
    m.denoise(near_queries(Y32, 0.1, [7]), 0.1)
    assert m.subset_report[-1]["bound"] < 1e-6
    # a common background: every image offers patches as close as the subset's, so the ELS share
    # left out is itself large, and the bound with it
    assert all(bound > 0.5 for bound, _ in loose.values())


def test_the_bound_mode_reaches_its_target(data):
    Y, _ = data(N=40, C=1, H=6, W=6, B=1, seed=3)
    t = 1.0
    x = near_queries(Y, t, [0, 9])
    for name, opts, patch in (("ideal", {"subset_pool": 2}, None), ("els", {"patch_size": 3}, ("els", 3, "zeros"))):
        m = em.make_machine(name, Y, subset_bound=0.6, subset=2, **opts)
        for b in range(2):
            m.denoise(x[b : b + 1], t)
            rep = m.subset_report[-1]
            assert rep["bound"] <= 0.6 and rep["size"] in (2, 4, 8, 16, 32, 40), rep
            # the doubling prefix streamed in pieces and merged equals that prefix in one stream
            fixed = em.make_machine(name, Y, subset=rep["size"], **opts)
            torch.testing.assert_close(m.denoise(x[b : b + 1], t), fixed.denoise(x[b : b + 1], t), rtol=0, atol=1e-12)
            bounds, _ = check(fixed, x[b : b + 1], t, Y, rep["size"], patch)
            assert bounds[0] == pytest.approx(rep["bound"], rel=1e-9)
            if rep["size"] > 2:  # the prefix before it did not reach the target
                half = em.make_machine(name, Y, subset=rep["size"] // 2, **opts)
                half.denoise(x[b : b + 1], t)
                assert half.subset_report[-1]["bound"] > 0.6
    m = em.make_machine("ideal", Y, subset_bound=0.01)  # first prefix: 1/64 of the class
    m.denoise(torch.cat([x, x]), torch.tensor([t, t, 0.5, 0.5]))
    rep = m.subset_report[-1]
    assert rep["t"] == [1.0, 0.5] and rep["bound"] <= 0.01 and rep["of"] == 40


def test_classes_are_respected(data):
    Y, x = data(N=30, C=1, H=5, W=5, B=3, seed=6)
    labels = torch.tensor([0, 1, 2] * 10)
    q = torch.tensor([2, 0, 2])
    for name, opts in (("ideal", {}), ("els", {"patch_size": 3})):
        m = em.make_machine(name, Y, labels=labels, subset=4, **opts)
        out, tr = m.denoise_traced(x, 0.6, q)
        members = set(torch.nonzero(labels == 2).flatten().tolist())
        assert set(tr.source_image[0].flatten().tolist()) <= members
        assert set(tr.source_image[2].flatten().tolist()) <= members
        for c in (0, 2):  # the class's own machine, its images renumbered, gives the same rows
            own = em.make_machine(name, Y[labels == c], subset=4, **opts)
            rows = (q == c).nonzero().flatten()
            torch.testing.assert_close(out[rows], own.denoise(x[rows], 0.6), rtol=0, atol=1e-13)
            assert torch.equal(m.subset_ranking(x[rows[0]], 0.6, c), own.subset_ranking(x[rows[0]], 0.6))
        assert m.subset_report[-1]["of"] == 10 and m.subset_report[-1]["size"] == 4
        with pytest.raises(em.InputError, match="class 5 has no training images"):
            m.subset_ranking(x[0], 0.6, 5)


def test_the_settings_are_options_and_recorded(data):
    from elsmachine.cli.common import parse_settings

    Y, x = data(N=12, C=1, H=4, W=4, B=1, seed=0)
    exact = em.make_machine("els", Y, patch_size=3)
    assert "subset" not in exact.describe() and not exact.subsetting
    got = parse_settings(["els.subset=0.25", "els.subset_bound=0.5", "els.subset-pool=2"], ["els"])
    m = em.make_machine("els", Y, patch_size=3, **got["els"])
    d = m.describe()
    assert (d["subset"], d["subset_bound"], d["subset_pool"]) == (0.25, 0.5, 2)
    m.denoise(x, 0.9)
    assert m.subset_report[-1]["size"] in (3, 6, 12)
    assert em.make_machine("ls", Y, patch_size=3, subset="10%").subset == 0.1
    assert em.make_machine("tempered", Y, temperature=2.0, subset=5).describe()["subset"] == 5
    assert em.make_machine("els-tempered", Y, patch_size=3, subset="3").subset == 3
    assert "subset" in em.MACHINES["els-border"].declaration.option_names


@pytest.mark.parametrize("bad, match", [
    ({"subset": 0}, "subset must be a count >= 1"), ({"subset": -3}, "subset must be a count >= 1"),
    ({"subset": 1.5}, r"subset share must lie in \(0, 1\]"), ({"subset": 0.0}, r"share must lie in \(0, 1\]"),
    ({"subset": "many"}, "subset must be a count"), ({"subset": True}, "subset must be a count"),
    ({"subset_bound": 0}, r"subset_bound must be a number in \(0, 1\)"),
    ({"subset_bound": 1.0}, r"subset_bound must be a number in \(0, 1\)"),
    ({"subset_bound": "x"}, r"subset_bound must be a number in \(0, 1\)"),
    ({"subset_pool": 0}, "subset_pool must be a positive integer"),
    ({"subset": 3, "approx_images": 2}, "not with approx_images"),
])
def test_bad_values_are_refused_in_one_line(data, bad, match):
    Y, _ = data(N=6, C=1, H=4, W=4, B=1, seed=0)
    with pytest.raises(em.InputError, match=match) as e:
        em.make_machine("els", Y, patch_size=3, **bad)
    assert "\n" not in str(e.value)


def test_machines_without_a_bound_refuse_the_mode(data):
    Y, _ = data(N=6, C=1, H=4, W=4, B=1, seed=0)
    with pytest.raises(em.InputError, match="els-soft sets sigma, so it has no bound"):
        em.make_machine("els-soft", Y, patch_size=3, sigma=1.0, subset=3)
    for name in ("els-radius", "els-centred"):
        with pytest.raises(em.InputError, match=f"{name} sets .*, so it has no bound"):
            em.make_machine(name, Y, patch_size=3, subset=3)
    with pytest.raises(em.InputError, match="nearest machine .*has no subset"):
        em.make_machine("nearest", Y, subset=3)
    with pytest.raises(em.InputError, match="smoothed machine has no subset mode"):
        em.SmoothedMachine(Y, subset=3)
