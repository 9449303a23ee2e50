"""The Gaussian machines: the exact posterior mean if the training data were Gaussian
(docs/theory.md, "The peers' machines"; Wang & Vastola's Gaussian model of diffusion).

Wiener: with the training mean mu and covariance Sigma = (1/N) sum_n (Y_n - mu)(Y_n - mu)^T
(over the flattened images, D = C*H*W) and its eigendecomposition U diag(l) U^T,

    x0_hat = mu + U diag(a l / (a^2 l + s^2)) U^T (x_t - a mu).

Stationary: the same formula for the training set augmented with all its circular shifts. Its
mean is constant per channel (mu_c) and its covariance is stationary, so the 2D Fourier basis
diagonalises it per pair of channels: at frequency f the C x C matrix

    K(f) = (1 / (N H W)) sum_n Z_n(f) Z_n(f)^H,   Z_n = DFT2(Y_n - mu_c),

and x0_hat(f) = mu_c(f) + a K(f) (a^2 K(f) + s^2)^-1 (x_t(f) - a mu_c(f)), applied through each
K(f)'s eigendecomposition. It is the linear analogue of circular ELS and commutes with circular
shifts.

Both hold only these statistics (D x D, or C x C per frequency), computed once per class in
float64 and cached; they are applied in x's dtype.
"""

from __future__ import annotations

import math

import torch

from ..noise import NoiseSchedule
from .base import DEFAULT_MEMORY_BUDGET, ScoreMachine, as_float
from .declaration import Cost, LINEAR, Declaration

__all__ = ["WienerMachine", "StationaryMachine", "GaussianMachine"]


class GaussianMachine(ScoreMachine):
    """Shared body: statistics per class, cached; no candidates to trace."""

    def __init__(self, images, labels=None, *, schedule: NoiseSchedule | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, distributed: bool = False) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, distributed=distributed)
        self._stats: dict = {}

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the ranks of a sharded machine (``t`` itself otherwise)."""
        if not self.distributed:
            return t
        from ..engines.distributed import all_reduce_sum

        if t.is_complex():
            return torch.view_as_complex(all_reduce_sum(torch.view_as_real(t).contiguous()))
        return all_reduce_sum(t)

    def statistics(self, cls=None) -> tuple:
        """The float64 statistics of class ``cls`` (all images when None), computed once."""
        if cls not in self._stats:
            self._stats[cls] = self._compute(as_float(self.images[self._index(cls)], torch.float64, "cpu"))
        return self._stats[cls]

    def _compute(self, Y: torch.Tensor) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError


class WienerMachine(GaussianMachine):
    """The Wiener filter of the training set's mean and covariance (the exact denoiser of a
    Gaussian with those moments)."""

    declaration = Declaration(
        name="wiener", summary="The Wiener filter: the exact denoiser of a Gaussian with the data's mean and "
        "covariance.", candidates="none: linear in x_t (the training set's mean and covariance)", form=LINEAR,
        order=40, cost=Cost(lambda k, n, H, W, t, padding=None, radius=None: 0, lambda k, n, H, W, C, t, padding=None, radius=None: 4.0 * (C * H * W) ** 2, "eigenbasis"))

    def _compute(self, Y):
        flat = Y.flatten(1)  # [N, D], N may be 0 on a rank
        N = self._sum(torch.tensor(float(flat.shape[0]), dtype=torch.float64))
        mu = self._sum(flat.sum(0)) / N
        Z = flat - mu
        cov = self._sum(Z.T @ Z) / N  # [D, D], 1/N as the PSPC code (not 1/(N-1))
        lam, U = torch.linalg.eigh(cov)
        return mu, lam.clamp_min(0.0), U

    def covariance(self, cls=None) -> torch.Tensor:
        """Sigma = U diag(l) U^T [D, D] (float64) of class ``cls``."""
        _, lam, U = self.statistics(cls)
        return (U * lam) @ U.T

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        mu, lam, U = (v.to(device=x.device, dtype=x.dtype) for v in self.statistics(cls))
        B = x.shape[0]
        a_, s_ = a.view(-1, 1), s.view(-1, 1)
        gain = a_ * lam / (a_ * a_ * lam + s_ * s_)  # [B, D]
        z = (x.reshape(B, -1) - a_ * mu) @ U  # coordinates in the eigenbasis
        return (mu + (gain * z) @ U.T).view_as(x), None



def _stationary_flops(k, n, H, W, C, t, padding=None, radius=None):
    # two FFTs and the C x C products per frequency
    return 2 * 5.0 * C * H * W * max(1.0, math.log2(H * W)) + 8.0 * C * C * H * W


class StationaryMachine(GaussianMachine):
    """The Wiener filter of the training set augmented with all its circular shifts, applied in
    the 2D Fourier domain (a C x C matrix per frequency)."""

    declaration = Declaration(
        name="stationary", summary="The stationary Gaussian: the Wiener filter of every circular shift of the data.",
        candidates="none: linear in x_t (the covariance of every circular shift, per frequency)", form=LINEAR,
        order=50, cost=Cost(lambda k, n, H, W, t, padding=None, radius=None: 0, _stationary_flops, "fourier"))

    def _compute(self, Y):
        _, C, H, W = Y.shape
        N = self._sum(torch.tensor(float(Y.shape[0]), dtype=torch.float64))
        mu = self._sum(Y.sum(dim=(0, 2, 3))) / (N * H * W)  # [C]
        if Y.shape[0]:
            Zf = torch.fft.fft2(Y - mu.view(1, C, 1, 1))  # [N, C, H, W] complex
        else:  # this rank holds none of the class (MKL refuses an empty transform)
            Zf = torch.zeros(Y.shape, dtype=torch.complex128)
        Zf = Zf.permute(2, 3, 1, 0)  # [H, W, C, N]
        K = self._sum(Zf @ Zf.conj().transpose(-1, -2)) / (N * H * W)  # [H, W, C, C] Hermitian
        lam, V = torch.linalg.eigh(K)
        return mu, lam.clamp_min(0.0), V

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        mu, lam, V = self.statistics(cls)
        cdt = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        mu = mu.to(device=x.device, dtype=x.dtype)
        lam = lam.to(device=x.device, dtype=x.dtype)
        V = V.to(device=x.device, dtype=cdt)
        B, C = x.shape[:2]
        a4, s4 = a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
        xf = torch.fft.fft2(x - a4 * mu.view(1, C, 1, 1)).permute(0, 2, 3, 1).unsqueeze(-1)  # [B, H, W, C, 1]
        gain = a4 * lam / (a4 * a4 * lam + s4 * s4)  # [B, H, W, C]
        z = V.conj().transpose(-1, -2) @ xf  # eigen-coordinates per frequency
        out = V @ (gain.unsqueeze(-1).to(cdt) * z)  # [B, H, W, C, 1]
        x0 = torch.fft.ifft2(out.squeeze(-1).permute(0, 3, 1, 2)).real
        return (x0 + mu.view(1, C, 1, 1)).to(x.dtype), None
