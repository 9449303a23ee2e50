"""Tracing a sample: where every pixel comes from, at every step (docs/theory.md, "The patch
mosaic"; the paper's patch mosaics).

:class:`Traced` wraps a machine and follows the denoiser contract itself, so the sampler does not
know about traces: every call goes to the machine's ``denoise_traced``, which returns, from the
same engine pass that denoises, per output pixel the candidate with the largest weight
(training image, source pixel, weight) and the effective number of candidates exp(H), H the
entropy of the weights. :meth:`Traced.sample_trace` gathers the calls of one sampling run::

    traced = em.Traced(machine)
    x = em.ddim_sample(traced, noise, steps=20)
    trace = traced.sample_trace()
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

__all__ = ["Traced", "SampleTrace", "STEP_FIELDS", "DOMINANT"]

# A pixel has a dominant patch when its top candidate holds at least this share of the weight
# (on the strokes of MNIST mosaics the effective number of candidates is 10 to 40). Elsewhere
# many candidates are equally good (a plain background patch matches thousands) and naming one
# of them would be arbitrary, so maps leave those pixels grey and counts leave them out.
DOMINANT = 0.1

STEP_FIELDS = ("x_t", "x0_hat", "source_image", "source_pixel", "weight", "effective")


class Traced:
    """A machine that records the trace of every denoiser call (see the module docstring)."""

    def __init__(self, machine) -> None:
        if hasattr(machine, "check_traceable"):
            machine.check_traceable()
        elif not hasattr(machine, "denoise_traced"):
            raise InputError(f"{type(machine).__name__} cannot be traced: it has no candidate with the largest weight "
                             f"per pixel to name")
        self.machine = machine
        self.schedule = machine.schedule
        self.has_patch_size = getattr(machine, "has_patch_size", False)
        self.calls: list = []

    def denoise(self, x: torch.Tensor, t, labels=None, patch_size: int | None = None) -> torch.Tensor:
        kw = {} if patch_size is None else {"patch_size": patch_size}
        x0, tr = self.machine.denoise_traced(x, t, labels=labels, **kw)
        self.calls.append((float(t) if not isinstance(t, torch.Tensor) else float(t.flatten()[0]), x, x0, tr))
        return x0

    def sample_trace(self) -> "SampleTrace":
        """The trace of the calls since this wrapper was made, one step per call."""
        if not self.calls:
            raise InputError("nothing was traced yet: sample with this wrapper first")
        cpu = lambda v: v.detach().cpu()  # noqa: E731
        steps = self.calls
        return SampleTrace(
            ts=torch.tensor([t for t, *_ in steps], dtype=torch.float64),
            patch_sizes=torch.tensor([int(tr.patch_size[0]) for *_, tr in steps], dtype=torch.long),
            x_t=torch.stack([cpu(x).float() for _, x, _, _ in steps]),
            x0_hat=torch.stack([cpu(x0).float() for _, _, x0, _ in steps]),
            source_image=torch.stack([cpu(tr.source_image) for *_, tr in steps]),
            source_pixel=torch.stack([cpu(tr.source_pixel) for *_, tr in steps]),
            weight=torch.stack([cpu(tr.weight).float() for *_, tr in steps]),
            effective=torch.stack([cpu(tr.effective).float() for *_, tr in steps]),
            padding=getattr(self.machine, "padding", None) or "zeros",
        )

    def __repr__(self) -> str:
        return f"Traced({self.machine!r})"


@dataclass
class SampleTrace:
    """Trace of a DDIM run over S steps for B images.

    ts [S] (time of each step, highest first), patch_sizes [S] (-1 where none), x_t and x0_hat
    [S, B, C, H, W] (each step's input and denoised estimate), source_image and source_pixel
    [S, B, H, W] (dominant candidate: training index, flat pixel i * W + j), weight and
    effective [S, B, H, W] (its weight; exp of the entropy of the weights); padding of the
    machine ("circular" sources lie on the torus).
    """

    ts: torch.Tensor
    patch_sizes: torch.Tensor
    x_t: torch.Tensor
    x0_hat: torch.Tensor
    source_image: torch.Tensor
    source_pixel: torch.Tensor
    weight: torch.Tensor
    effective: torch.Tensor
    padding: str = "zeros"

    def select(self, b: int) -> "SampleTrace":
        """The trace of image b alone (batch dimension kept, of size 1)."""
        f = {k: getattr(self, k)[:, b : b + 1] for k in STEP_FIELDS}
        return SampleTrace(ts=self.ts, patch_sizes=self.patch_sizes, padding=self.padding, **f)

    def to_arrays(self) -> dict:
        out = {"trace_ts": self.ts.numpy(), "trace_patch_sizes": self.patch_sizes.numpy(),
               "trace_padding": np.array(self.padding)}
        for k in STEP_FIELDS:
            out[f"trace_{k}"] = getattr(self, k).numpy()
        return out

    @staticmethod
    def from_arrays(d: dict) -> "SampleTrace":
        missing = [k for k in ("trace_ts", *[f"trace_{f}" for f in STEP_FIELDS]) if k not in d]
        if missing:
            raise InputError(f"no trace in these samples (missing {', '.join(missing)}); sample with --trace")
        f = {k: torch.from_numpy(np.asarray(d[f"trace_{k}"])) for k in STEP_FIELDS}
        padding = str(d["trace_padding"]) if "trace_padding" in d else "zeros"
        return SampleTrace(ts=torch.from_numpy(np.asarray(d["trace_ts"])),
                           patch_sizes=torch.from_numpy(np.asarray(d["trace_patch_sizes"])), padding=padding, **f)

    def travel(self) -> torch.Tensor:
        """[S, B, H, W] distance in pixels from each output pixel to the source pixel of its
        dominant patch: the plain distance for zero padding, the distance around the torus for
        circular padding (whose patches wrap, so a source one pixel across the border is 1 away)."""
        H, W = self.source_image.shape[-2:]
        i = torch.arange(H).view(1, 1, H, 1)
        j = torch.arange(W).view(1, 1, 1, W)
        di = (self.source_pixel // W - i).abs()
        dj = (self.source_pixel % W - j).abs()
        if self.padding == "circular":
            di = torch.minimum(di, H - di)
            dj = torch.minimum(dj, W - dj)
        return torch.sqrt((di**2 + dj**2).double()).float()
