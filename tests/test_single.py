"""Single-image diffusion (experiments/single.py): the denoiser against a float64 brute force
written from the definition (both paddings, both readouts, sizes unlike the source's, both
engines), against ELSMachine over the one image at equal sizes, the trace, the copy statistic,
the sampler's modes and its errors."""

import math

import numpy as np
import pytest
import torch

import elsmachine as em
from elsmachine.experiments import single as sg


def _footprint(i, n, h):
    return (max(0, h - i), max(0, i + h - (n - 1)))


def _patch(img, i, j, k, padding):
    """The k x k window of img [C, H, W] centred on (i, j), zero-padded or periodic, as a vector."""
    C, H, W = img.shape
    h = k // 2
    out = torch.zeros(C, k, k, dtype=torch.float64)
    for u in range(-h, h + 1):
        for v in range(-h, h + 1):
            r, c = i + u, j + v
            if padding == "circular":
                out[:, u + h, v + h] = img[:, r % H, c % W]
            elif 0 <= r < H and 0 <= c < W:
                out[:, u + h, v + h] = img[:, r, c]
    return out.reshape(-1)


def brute_centre(S, x, t, k, padding):
    """x0_hat [B, C, H, W] and the dominant source pixel [B, H, W], straight from the definition."""
    S, x = S.double(), x.double()
    sch = em.CosineSchedule()
    a, s = sch.alpha(t), sch.sigma(t)
    C, Hs, Ws = S.shape
    B, _, H, W = x.shape
    h = k // 2
    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    best = torch.zeros(B, H, W, dtype=torch.long)
    src = {(p, q): _patch(S, p, q, k, padding) for p in range(Hs) for q in range(Ws)}
    for b in range(B):
        for i in range(H):
            for j in range(W):
                qv = _patch(x[b], i, j, k, padding)
                cands = [(p, q) for p in range(Hs) for q in range(Ws)
                         if padding == "circular" or (_footprint(p, Hs, h) == _footprint(i, H, h)
                                                      and _footprint(q, Ws, h) == _footprint(j, W, h))]
                logits = torch.stack([-((qv - a * src[c]) ** 2).sum() / (2 * s * s) for c in cands])
                w = torch.softmax(logits, 0)
                vals = torch.stack([S[:, p, q] for p, q in cands])
                out[b, :, i, j] = (w[:, None] * vals).sum(0)
                p, q = cands[int(torch.argmax(logits))]
                best[b, i, j] = p * Ws + q
    return out, best


def brute_fold(S, x, t, k, rho):
    """The published readout from its definition: inside windows, whole-patch posterior means,
    Gaussian fold."""
    S, x = S.double(), x.double()
    sch = em.CosineSchedule()
    a, s = sch.alpha(t), sch.sigma(t)
    C, Hs, Ws = S.shape
    B, _, H, W = x.shape
    h = k // 2
    keys = torch.stack([S[:, p - h : p + h + 1, q - h : q + h + 1].reshape(-1)
                        for p in range(h, Hs - h) for q in range(h, Ws - h)])
    g = torch.exp(-0.5 * (torch.linspace(-1, 1, k, dtype=torch.float64) / rho) ** 2)
    g2 = g[:, None] * g[None, :]
    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    for b in range(B):
        num = torch.zeros(C, H, W, dtype=torch.float64)
        den = torch.zeros(H, W, dtype=torch.float64)
        for i in range(h, H - h):
            for j in range(h, W - h):
                qv = x[b, :, i - h : i + h + 1, j - h : j + h + 1].reshape(-1)
                w = torch.softmax(-((qv[None] - a * keys) ** 2).sum(1) / (2 * s * s), 0)
                est = (w[:, None] * keys).sum(0).view(C, k, k)
                num[:, i - h : i + h + 1, j - h : j + h + 1] += est * g2
                den[i - h : i + h + 1, j - h : j + h + 1] += g2
        out[b] = num / den
    return out


CASES = [((7, 9), (7, 9), 3), ((7, 9), (5, 11), 3), ((8, 6), (9, 7), 5), ((6, 6), (4, 8), 1)]


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("backend", ["native", "torch"])
@pytest.mark.parametrize("shapes", CASES)
def test_centre_matches_brute_force(padding, backend, shapes):
    (Hs, Ws), (H, W), k = shapes
    if padding == "zeros" and k > min(H, W, Hs, Ws):
        pytest.skip("does not fit")
    if backend == "native" and not em.engines.displacement.available(torch.zeros(1, dtype=torch.float64)):
        pytest.skip("no compiled kernel")
    g = torch.Generator().manual_seed(Hs * 100 + H)
    S = torch.rand(3, Hs, Ws, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(2, 3, H, W, generator=g, dtype=torch.float64)
    d = sg.SingleImageDenoiser(S, k, padding, backend=backend)
    for t in (0.9, 0.2):
        ref, best = brute_centre(S, x, t, k, padding)
        got, tr = d.denoise_traced(x, t)
        assert got.dtype == torch.float64 and got.shape == x.shape
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
        assert torch.equal(tr["source_pixel"], best)


def test_float32_close_to_float64():
    g = torch.Generator().manual_seed(1)
    S = torch.rand(3, 10, 12, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(1, 3, 11, 9, generator=g, dtype=torch.float64)
    d64 = sg.SingleImageDenoiser(S, 5, "zeros")
    d32 = sg.SingleImageDenoiser(S.float(), 5, "zeros")
    for t in (0.8, 0.1):
        torch.testing.assert_close(d32.denoise(x.float(), t).double(), d64.denoise(x, t), rtol=0, atol=2e-5)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_equals_els_machine_at_equal_size(padding):
    g = torch.Generator().manual_seed(2)
    S = torch.rand(3, 9, 11, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    m = em.ELSMachine(S[None], patch_size=5, padding=padding)
    d = sg.SingleImageDenoiser(S, 5, padding)
    for t in (0.7, 0.15):
        torch.testing.assert_close(d.denoise(x, t), m.denoise(x, t), rtol=0, atol=1e-10)


def test_fold_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    S = torch.rand(3, 9, 10, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(1, 3, 8, 11, generator=g, dtype=torch.float64)
    d = sg.SingleImageDenoiser(S, 5, readout="fold", fold_rho=0.3)
    for t in (0.9, 0.3):
        torch.testing.assert_close(d.denoise(x, t), brute_fold(S, x, t, 5, 0.3), rtol=0, atol=1e-10)


def test_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(4)
    S = torch.rand(1, 12, 12, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.randn(1, 1, 10, 10, generator=g, dtype=torch.float64)
    a = sg.SingleImageDenoiser(S, 3, "circular", backend="torch").denoise(x, 0.3)
    b = sg.SingleImageDenoiser(S, 3, "circular", backend="torch", memory_budget=4096).denoise(x, 0.3)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_copy_statistic():
    H, W, Hs, Ws = 6, 8, 10, 10
    i = np.arange(H).reshape(-1, 1)
    j = np.arange(W).reshape(1, -1)
    sp = np.broadcast_to((i + 2) * Ws + (j + 1), (H, W)).copy()  # one verbatim copy, offset (2, 1)
    st = sg.copy_statistic(torch.from_numpy(sp), (Hs, Ws))
    assert st.largest == 1.0 and st.regions == 1 and st.offset == (2, 1) and st.copied == 1.0
    sp[:, 4:] = (i + 0) * Ws + (j[:, 4:] - 4)  # the right half from another offset
    sp[0, 0] = 99  # one stray pixel
    st = sg.copy_statistic(torch.from_numpy(sp), (Hs, Ws))
    assert st.regions == 3 and st.largest == 24 / 48 and st.copied == 47 / 48
    # no two neighbours agree: every pixel its own region
    rnd = np.random.default_rng(0).permutation(Hs * Ws)[: H * W].reshape(H, W)
    st = sg.copy_statistic(torch.from_numpy(rnd * 0 + np.arange(H * W).reshape(H, W) * 7 % 100), (Hs, Ws))
    assert st.largest <= 2 / 48


def test_pyramid_shapes_and_default_scales():
    assert sg.pyramid_shapes(192, 288, 0.5, 4) == [(24, 36), (48, 72), (96, 144), (192, 288)]
    assert sg.default_num_scales(192, 288, 0.5) == 4
    assert sg.default_num_scales(20, 30, 0.5) == 1


@pytest.mark.parametrize("mode", ["uncond", "retarget", "symmetric", "tileable"])
def test_modes_run_and_are_seeded(mode):
    g = torch.Generator().manual_seed(5)
    S = torch.rand(3, 16, 20, generator=g) * 2 - 1
    kw = dict(mode=mode, seeds=[0, 1], num_scales=2, patch_size=3, steps=3, fine_steps=2, trace=True)
    size = (12, 24) if mode == "retarget" else (16, 16)
    r = sg.sample_single(S, size=size, **kw)
    assert r.images.shape == (2, 3, *size) and bool(torch.isfinite(r.images).all())
    alone = sg.sample_single(S, size=size, **{**kw, "seeds": [1]})
    torch.testing.assert_close(alone.images[0], r.images[1], rtol=0, atol=1e-5)
    assert len(r.copies) == 2 and 0 < r.copies[0].largest <= 1
    assert r.trace.source_pixel.shape == (2, 2, *size) and r.trace.source_shape == (16, 20)
    if mode == "symmetric":
        torch.testing.assert_close(r.images, r.images.flip(-1), rtol=0, atol=1e-6)
    if mode == "tileable":
        assert r.settings["padding"] == "circular"


def test_bundled_images_load():
    img = sg.load_source("chelsea")
    assert img.shape == (3, 192, 288) and float(img.min()) >= -1 and float(img.max()) <= 1


@pytest.mark.parametrize("call, message", [
    (lambda S: sg.SingleImageDenoiser(S, 4), "odd"),
    (lambda S: sg.SingleImageDenoiser(S, 3, "mirror"), "padding"),
    (lambda S: sg.SingleImageDenoiser(S, 3, readout="mean"), "readout"),
    (lambda S: sg.SingleImageDenoiser(S, 9).denoise(torch.zeros(1, 3, 8, 8), 0.5), "does not fit"),
    (lambda S: sg.SingleImageDenoiser(S, 3).denoise(torch.zeros(1, 1, 8, 8), 0.5), "channels"),
    (lambda S: sg.SingleImageDenoiser(S, 3).denoise(torch.zeros(1, 3, 8, 8), 1.5), "t"),
    (lambda S: sg.sample_single(S, mode="collage"), "mode"),
    (lambda S: sg.sample_single(S, mode="retarget"), "size"),
    (lambda S: sg.sample_single(S, size="12by4"), "HxW"),
    (lambda S: sg.sample_single(S, mode="tileable", padding="zeros"), "circular"),
    (lambda S: sg.sample_single(S, scale_factor=1.5), "scale_factor"),
    (lambda S: sg.sample_single(S, num_scales=2, patch_size=[3, 3, 3]), "per"),
    (lambda S: sg.load_source("no/such/image.png"), "image"),
])
def test_bad_input_is_one_line(call, message):
    S = torch.zeros(3, 8, 8)
    with pytest.raises(em.InputError) as e:
        call(S)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_t_check():
    assert math.isclose(float(sg.fine_grid(0.4, 3)[1]), 0.4 * (0.01 / 0.4) ** 0.5)


def test_command_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from elsmachine.cli import app

    out = tmp_path / "s.png"
    res = CliRunner().invoke(app, ["single", "coffee", "-o", str(out), "--size", "20x24", "--mode", "tileable",
                                   "--seed", "3", "-n", "2", "--scales", "2", "-k", "3", "--steps", "2",
                                   "--fine-steps", "1", "--trace"])
    assert res.exit_code == 0, res.output
    assert out.exists() and out.with_suffix(".npz").exists() and out.with_suffix(".html").exists()
    d = np.load(out.with_suffix(".npz"))
    assert d["images"].shape == (2, 3, 20, 24) and list(d["seeds"]) == [3, 4]
    tr = sg.SingleTrace.from_arrays(d)
    assert tr.source_shape == (192, 288) and tr.source_pixel.shape[1:] == (2, 20, 24)
    assert "source_pixel" in out.with_suffix(".html").read_text()
