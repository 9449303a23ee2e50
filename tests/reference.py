"""Brute-force float64 machines, written straight from the table in DESIGN.md.

Deliberately naive: explicit padding, explicit candidate lists per output pixel, explicit
distances and a plain softmax. Only for small images and small training sets.
"""

from __future__ import annotations

import math

import torch


def coefficients(t: float):
    abar = math.cos(t / 1.008 * math.pi / 2) ** 2
    return math.sqrt(abar), math.sqrt(1 - abar)


def patch(img: torch.Tensor, i: int, j: int, k: int, padding: str) -> torch.Tensor:
    """k x k window of img [C, H, W] centred on (i, j): zero or periodic outside."""
    C, H, W = img.shape
    h = k // 2
    out = torch.zeros(C, k, k, dtype=torch.float64)
    for di in range(-h, h + 1):
        for dj in range(-h, h + 1):
            r, c = i + di, j + dj
            if padding == "circular":
                out[:, di + h, dj + h] = img[:, r % H, c % W]
            elif 0 <= r < H and 0 <= c < W:
                out[:, di + h, dj + h] = img[:, r, c]
    return out.flatten()


def footprint(i, j, H, W, k):
    h = k // 2
    return (max(0, h - i), max(0, i + h - (H - 1)), max(0, h - j), max(0, j + h - (W - 1)))


def candidates(kind: str, i: int, j: int, H: int, W: int, k: int, padding: str):
    """Source pixels p that output pixel (i, j) may take a patch from."""
    if kind == "ls":
        return [(i, j)]
    if kind == "els" and padding == "circular":
        return [(r, c) for r in range(H) for c in range(W)]
    f = footprint(i, j, H, W, k)
    return [(r, c) for r in range(H) for c in range(W) if footprint(r, c, H, W, k) == f]


def ideal(x, t, Y, return_weights=False):
    """x [B, C, H, W], Y [N, C, H, W] -> x0_hat [B, C, H, W] in float64."""
    a, s = coefficients(t)
    x, Y = x.double(), Y.double()
    d = ((x[:, None] - a * Y[None]) ** 2).flatten(2).sum(-1)  # [B, N]
    w = torch.softmax(-d / (2 * s * s), dim=1)
    out = torch.einsum("bn,nchw->bchw", w, Y)
    return (out, w) if return_weights else out


def tempered(x, t, Y, temperature):
    """IS with its logits divided by ``temperature``, by enumeration over the images."""
    a, s = coefficients(t)
    x, Y = x.double(), Y.double()
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        z = torch.tensor([-float(((x[b] - a * Y[n]) ** 2).sum()) / (2 * s * s * temperature) for n in range(Y.shape[0])],
                         dtype=torch.float64)
        w = torch.exp(z - z.max())
        out[b] = torch.einsum("n,nchw->chw", w / w.sum(), Y)
    return out


def near(cands, i, j, H, W, radius, padding):
    """The candidates at most ``radius`` pixels from (i, j) along each axis (around the torus
    for circular padding)."""
    def dist(u, v, n):
        d = abs(u - v)
        return min(d, n - d) if padding == "circular" else d

    return [(r, c) for r, c in cands if dist(r, i, H) <= radius and dist(c, j, W) <= radius]


def patch_machine(kind, x, t, Y, k, padding, return_trace=False, temperature=1.0, sigma=math.inf, radius=math.inf,
                  centring=0.0):
    """LS ("ls") or ELS ("els") by enumeration, its logits divided by ``temperature``, each
    window offset o's squared differences weighted by exp(-|o|^2 / (2 sigma^2)), its candidates
    cut to those within ``radius`` pixels, both patches less ``centring`` times each channel's
    patch mean; optionally the argmax candidate per pixel."""
    a, s = coefficients(t)
    x, Y = x.double(), Y.double()
    B, C, H, W = x.shape
    N = Y.shape[0]
    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    top = torch.zeros(B, H, W, 2, dtype=torch.long)  # (image, flat pixel)
    ent = torch.zeros(B, H, W, dtype=torch.float64)
    ypatch = {}
    h = k // 2
    win = torch.tensor([[math.exp(-(di * di + dj * dj) / (2 * sigma * sigma)) for dj in range(-h, h + 1)]
                      for di in range(-h, h + 1)], dtype=torch.float64).flatten().repeat(C)
    for i in range(H):
        for j in range(W):
            cands = near(candidates(kind, i, j, H, W, k, padding), i, j, H, W, radius, padding)
            keys, vals, ids = [], [], []
            for n in range(N):
                for (r, c) in cands:
                    if (n, r, c) not in ypatch:
                        ypatch[(n, r, c)] = patch(Y[n], r, c, k, padding)
                    keys.append(ypatch[(n, r, c)])
                    vals.append(Y[n, :, r, c])
                    ids.append((n, r * W + c))
            K = torch.stack(keys)  # [L, Dp]
            V = torch.stack(vals)  # [L, C]
            for b in range(B):
                q = patch(x[b], i, j, k, padding)
                d = q[None] - a * K  # [L, C k k]
                if centring:  # T(P) = P - c mean(P) per channel, and T is linear
                    d = (d.view(len(K), C, -1) - centring * d.view(len(K), C, -1).mean(-1, keepdim=True)).view(len(K), -1)
                logits = -((d ** 2) * win).sum(-1) / (2 * s * s * temperature)
                w = torch.softmax(logits, 0)
                out[b, :, i, j] = w @ V
                m = int(torch.argmax(logits))
                top[b, i, j, 0], top[b, i, j, 1] = ids[m]
                ent[b, i, j] = -(w * torch.log(w.clamp_min(1e-300))).sum()
    if return_trace:
        return out, top, ent
    return out


def ddim(denoise, x, ts):
    """Deterministic DDIM with denoise(x, t) on the grid ts (descending, ending at 0)."""
    for t, tn in zip(ts[:-1], ts[1:]):
        a, s = coefficients(t)
        x0 = denoise(x, t)
        if tn == 0:
            x = x0
        else:
            an, sn = coefficients(tn)
            x = an * x0 + sn * (x - a * x0) / s
    return x


# ----------------------------------------------------------------------------- the peers' machines
def nearest(x, t, Y):
    """Y_n* with n* the first nearest training image to x / a in L2."""
    a, _ = coefficients(t)
    x, Y = x.double(), Y.double()
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        d = [float(((x[b] - a * Y[n]) ** 2).sum()) for n in range(Y.shape[0])]
        out[b] = Y[d.index(min(d))]
    return out


def gaussian_posterior_mean(x, t, mu, cov):
    """mu + a cov (a^2 cov + s^2 I)^-1 (x - a mu), by a linear solve (no eigendecomposition)."""
    a, s = coefficients(t)
    B = x.shape[0]
    D = mu.numel()
    xf = x.double().reshape(B, D)
    A = a * a * cov + s * s * torch.eye(D, dtype=torch.float64)
    z = torch.linalg.solve(A, (xf - a * mu).T)  # [D, B]
    return (mu + (a * cov @ z).T).reshape(x.shape)


def moments(Y, ddof=0):
    """The training set's mean, and the eigenvalues (clamped at 0) and eigenvectors of its
    covariance (1/(N - ddof)), in float64."""
    N = Y.shape[0]
    flat = Y.double().reshape(N, -1)
    mu = flat.mean(0)
    cov = (flat - mu).T @ (flat - mu) / (N - ddof)
    lam, U = torch.linalg.eigh(cov)
    return mu, lam.clamp_min(0), U


def wiener(x, t, Y):
    """The Wiener machine from its definition: mean, covariance (1/N), eigendecomposition."""
    a, s = coefficients(t)
    mu, lam, U = moments(Y)
    xf = x.double().reshape(x.shape[0], -1)
    return (mu + ((xf - a * mu) @ U * (a * lam / (a * a * lam + s * s))) @ U.T).reshape(x.shape)


def all_shifts(Y):
    """Every circular shift of every image: [N * H * W, C, H, W]."""
    H, W = Y.shape[-2:]
    return torch.cat([torch.roll(Y, (i, j), dims=(2, 3)) for i in range(H) for j in range(W)])


def stationary(x, t, Y):
    """The stationary Gaussian machine: the Wiener machine of the training set with all its
    circular shifts, written out explicitly."""
    return wiener(x, t, all_shifts(Y))


def locality(x, t, Y, threshold=0.02, temperature=1.0, mask_from=None):
    """Lukoianov et al.'s machine entry by entry: Wiener projection of the unbiased covariance
    (1/(N - 1), as their code), normalised rows, binary mask, one softmax over images per output
    entry (the mask from the moments of ``mask_from`` when given, the softmax over Y)."""
    a, s = coefficients(t)
    N = Y.shape[0]
    flat = Y.double().reshape(N, -1)
    _, lam, U = moments(Y if mask_from is None else mask_from, ddof=1)
    P = U @ torch.diag(a * a * lam / (a * a * lam + s * s)) @ U.T
    D = P.shape[0]
    M = torch.zeros_like(P)
    for u in range(D):
        d = P[u, u] if abs(float(P[u, u])) >= 1e-6 else 1.0
        M[u] = P[u] / d
    mask = M.abs() >= threshold * M.abs().max()
    out = torch.zeros(x.shape[0], D, dtype=torch.float64)
    xf = x.double().reshape(x.shape[0], -1)
    for b in range(x.shape[0]):
        for m in range(D):
            us = torch.nonzero(mask[:, m]).flatten()
            logits = torch.stack([-((xf[b, us] - a * flat[n, us]) ** 2).sum() / (2 * s * s * temperature)
                                  for n in range(N)])
            out[b, m] = torch.softmax(logits, 0) @ flat[:, m]
    return out.reshape(x.shape)


def composite(x, t, Y, windows):
    """PSPC over ``windows`` (a list of lists of flat pixel indices): each window's posterior mean
    of its pixels over the same pixels of every image, averaged where windows overlap."""
    a, s = coefficients(t)
    B, C, H, W = x.shape
    N = Y.shape[0]
    xf, Yf = x.double().reshape(B, C, H * W), Y.double().reshape(N, C, H * W)
    total = torch.zeros(B, C, H * W, dtype=torch.float64)
    count = torch.zeros(H * W, dtype=torch.float64)
    for win in windows:
        win = torch.tensor(win)
        count[win] += 1
        for b in range(B):
            logits = torch.stack([-((xf[b][:, win] - a * Yf[n][:, win]) ** 2).sum() / (2 * s * s) for n in range(N)])
            w = torch.softmax(logits, 0)
            total[b][:, win] += torch.einsum("n,ncp->cp", w, Yf[:, :, win])
    return (total / count).reshape(B, C, H, W)


def square_windows(H, W, k):
    """The k x k crops fully inside an H x W image, as lists of flat pixel indices."""
    return [[(i + di) * W + (j + dj) for di in range(k) for dj in range(k)]
            for i in range(H - k + 1) for j in range(W - k + 1)]


def golddiff_subset(x, t, Y, pre, k_max, k, factor):
    """GoldDiff's coarse-to-fine choice among the pre-sampled positions ``pre``: the k_max nearest
    by pooled distance, then the k nearest of those by full distance (lower position on ties)."""
    a, _ = coefficients(t)
    x, Y = x.double(), Y.double()

    def pool(v):
        C, H, W = v.shape
        return v.reshape(C, H // factor, factor, W // factor, factor).mean(dim=(2, 4))

    coarse = sorted(pre, key=lambda n: (float(((pool(x) - a * pool(Y[n])) ** 2).sum()), n))[:k_max]
    return sorted(coarse, key=lambda n: (float(((x - a * Y[n]) ** 2).sum()), n))[:k]
