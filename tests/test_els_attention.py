"""ELS with one attention step against its definition, its limits and its errors."""

import math

import pytest
import reference as ref
import torch

import elsmachine as em


def attend(z, k, tau, padding):
    """sum_r softmax_r(-|P_q(z) - P_r(z)|^2 / (2 tau^2)) z(r), pixel by pixel, in float64."""
    B, C, H, W = z.shape
    out = torch.zeros_like(z, dtype=torch.float64)
    for b in range(B):
        keys = [ref.patch(z[b].double(), i, j, k, padding) for i in range(H) for j in range(W)]
        vals = z[b].double().flatten(1)  # [C, HW]
        for i in range(H):
            for j in range(W):
                q = keys[i * W + j]
                logits = torch.tensor([-float(((q - kr) ** 2).sum()) / (2 * tau * tau) for kr in keys],
                                      dtype=torch.float64)
                w = torch.exp(logits - logits.max())
                out[b, :, i, j] = vals @ (w / w.sum())
    return out


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_els_attention_matches_its_definition(data, padding):
    Y, x = data(N=5, C=2, H=4, W=5, B=2, seed=4)
    m = em.make_machine("els-attention", Y, patch_size=3, padding=padding, attention_weight=0.6,
                        attention_width=0.7, attention_size=3)
    for t in (0.3, 0.8):
        z = ref.patch_machine("els", x, t, Y, 3, padding)
        expect = 0.4 * z + 0.6 * attend(z, 3, 0.7, padding)
        torch.testing.assert_close(m.denoise(x, t), expect, rtol=0, atol=1e-10)
        assert (m.denoise(x.float(), t).double() - expect).abs().max() < 1e-4
        for k, got in zip((5, 1), m.denoise_sizes(x, t, [5, 1])):
            zk = ref.patch_machine("els", x, t, Y, k, padding)
            torch.testing.assert_close(got, 0.4 * zk + 0.6 * attend(zk, 3, 0.7, padding), rtol=0, atol=1e-10)


def test_per_step_values_limits_and_equivariance(data):
    Y, x = data(N=6, C=1, H=5, W=5, B=3, seed=8)
    labels = torch.tensor([0, 1] * 3)
    q = torch.tensor([0, 0, 1])
    m = em.make_machine("els-attention", Y, patch_size=3, labels=labels, attention_weight=[1.0, 0.0, 0.5, 0.2],
                        attention_width=[0.5, 1.0, 2.0, 0.3])
    tt = torch.tensor([1.0, 0.75, 0.5])  # the 4-step grid: t = 1, 0.75, 0.5, 0.25
    rows = []
    for b, (beta, tau) in enumerate([(1.0, 0.5), (0.0, 1.0), (0.5, 2.0)]):
        z = ref.patch_machine("els", x[b : b + 1], float(tt[b]), Y[labels == q[b]], 3, "zeros")
        rows.append((1 - beta) * z + beta * attend(z, 3, tau, "zeros"))
    torch.testing.assert_close(m.denoise(x, tt, q), torch.cat(rows), rtol=0, atol=1e-10)
    # a huge width averages every pixel of the estimate; beta = 0 is ELS
    wide = em.make_machine("els-attention", Y, patch_size=3, attention_weight=1.0, attention_width=1e8)
    z = em.make_machine("els", Y, patch_size=3).denoise(x, 0.4)
    torch.testing.assert_close(wide.denoise(x, 0.4), z.mean(dim=(2, 3), keepdim=True).expand_as(z), rtol=0,
                               atol=1e-9)
    torch.testing.assert_close(em.make_machine("els-attention", Y, patch_size=3).denoise(x, 0.4), z, rtol=0, atol=0)
    # circular: the whole machine commutes with circular shifts
    c = em.make_machine("els-attention", Y, patch_size=3, padding="circular", attention_weight=0.7)
    shift = lambda v: torch.roll(v, (1, 2), (2, 3))
    torch.testing.assert_close(c.denoise(shift(x), 0.5), shift(c.denoise(x, 0.5)), rtol=0, atol=1e-10)
    assert m.describe()["attention_width"] == {"ts": [1.0, 0.75, 0.5, 0.25], "values": [0.5, 1.0, 2.0, 0.3]} and m.describe()["attention_size"] == 3


def test_els_attention_refuses_bad_options(data):
    Y, _ = data(N=3, C=1, H=4, W=4, B=1, seed=2)
    for bad in (-0.1, 1.5, math.nan, "x"):
        with pytest.raises(em.InputError, match="attention_weight"):
            em.make_machine("els-attention", Y, patch_size=3, attention_weight=bad)
    for bad in (0, -1.0, math.inf):
        with pytest.raises(em.InputError, match="attention_width"):
            em.make_machine("els-attention", Y, patch_size=3, attention_width=bad)
    for bad in (2, 0, 1.5, True):
        with pytest.raises(em.InputError, match="attention_size"):
            em.make_machine("els-attention", Y, patch_size=3, attention_size=bad)
