"""A trained network behind the one denoiser contract (docs/theory.md, "The denoiser contract").

A network predicting the noise eps of x_t = a x_0 + s eps (``prediction="epsilon"``), the clean
sample (``"sample"``) or v = a eps - s x_0 (``"v_prediction"``) answers

    denoise(x, t, labels) -> x0_hat = (x_t - s eps_hat) / a,  = the sample,  = a x_t - s v_hat,

so samplers, calibration and metrics treat it exactly like a score machine. Dtype and device
follow the input: the network runs in x's dtype on x's device (its weights are moved there
when they differ), so float64 input is computed in float64 throughout.

x0_hat may then be held in range, as diffusers' schedulers do (``DDIMScheduler.step``, step 4):
clipped to [-r, r] (``clip_sample_range``), or dynamically thresholded (Imagen, Saharia et al.
2022, sec. 2.3; ``thresholding``): per image, p = the ``ratio`` quantile of |x0_hat| clamped to
[1, ``sample_max_value``], x0_hat = clamp(x0_hat, -p, p) / p. The noise estimate follows from
the held x0_hat, eps_hat = (x_t - a x0_hat) / s, as in every denoiser.
"""

from __future__ import annotations

import logging
import math

import torch

from .. import checks
from ..errors import InputError, RunError
from ..noise import CosineSchedule, NoiseSchedule

__all__ = ["NetworkDenoiser"]


PREDICTIONS = ("epsilon", "sample", "v_prediction")


class NetworkDenoiser:
    """Adapter: a network as ``denoise(x, t, labels=None) -> x0_hat``.

    Args:
        net: module called as net(x, t) or net(x, t, labels) with t in [0, 1], returning its
            prediction of the noise, the sample or v (``prediction``).
        takes_labels: whether to pass labels (class-conditional networks).
        schedule: noise schedule the network was trained on.
        padding: the network's padding ("zeros" / "circular"), used to pick the matching ELS.
        num_classes: classes of a conditional network (0: unknown or unconditional).
        prediction: "epsilon", "sample" or "v_prediction".
        meta: provenance (config, path), carried into results.
        clip_sample_range: clip x0_hat to [-r, r] (diffusers' ``clip_sample``); None: no clipping.
        thresholding: (ratio, sample_max_value), diffusers' dynamic thresholding
            (``thresholding=True``, ``dynamic_thresholding_ratio``, ``sample_max_value``),
            computed as ``DDIMScheduler._threshold_sample`` computes it; None: none. At most one
            of the two.
        clipped_eps: where x0_hat is held, whether a DDIM step's noise estimate follows from the
            held x0_hat (diffusers' ``use_clipped_model_output=True``) or is the network's own
            (False: diffusers' default step, what ``DDIMPipeline`` runs; see :meth:`denoise_eps`).
    """

    def __init__(self, net, *, takes_labels: bool = False, schedule: NoiseSchedule | None = None,
                 padding: str | None = None, num_classes: int = 0, prediction: str = "epsilon",
                 meta: dict | None = None, clip_sample_range: float | None = None,
                 thresholding: tuple[float, float] | None = None, clipped_eps: bool = True) -> None:
        if prediction not in PREDICTIONS:
            raise InputError(f"unknown prediction type {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.x0_clip = _x0_clip(clip_sample_range, thresholding)
        if not isinstance(clipped_eps, bool):
            raise InputError(f"clipped_eps must be True or False, got {clipped_eps!r}")
        self.clipped_eps = clipped_eps
        self.prediction = prediction
        self.net = net
        self.takes_labels = takes_labels
        self.schedule = schedule or CosineSchedule()
        self.padding = padding
        self.num_classes = num_classes
        self.meta = meta or {}

    def _follow(self, x: torch.Tensor) -> None:
        """Move the weights to x's dtype and device where they differ (float32 <-> float64 is exact)."""
        for p in self.net.parameters():
            if p.dtype != x.dtype or p.device != x.device:
                quiet = logging.getLogger("diffusers")  # it warns on every cast it did not make itself
                level = quiet.level
                quiet.setLevel(logging.ERROR)
                try:
                    self.net.to(device=x.device, dtype=x.dtype)
                finally:
                    quiet.setLevel(level)
            return

    def output(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        """The network's own output for x [B, C, H, W] at t (float or [B]). Gradients flow only
        where x requires them (as for a sensitivity); otherwise nothing is recorded."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise InputError(f"x must be a floating [B, C, H, W] tensor, got {getattr(x, 'shape', type(x).__name__)}")
        B = x.shape[0]
        tt = checks.times(t, B)
        self._follow(x)
        args = [x, tt.to(device=x.device, dtype=x.dtype)]
        if self.takes_labels:
            if labels is None:
                raise InputError("this network is class-conditional: labels are required")
            lab = checks.labels_tensor(labels, B, "labels")
            if self.num_classes and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
                raise InputError(f"labels must lie in 0..{self.num_classes - 1}, got {lab.tolist()}")
            args.append(lab.to(x.device))
        elif labels is not None:
            raise InputError("labels were given but this network is not class-conditional")
        was_training = getattr(self.net, "training", False)
        if hasattr(self.net, "eval"):
            self.net.eval()
        try:
            with torch.set_grad_enabled(x.requires_grad):
                out = self.net(*args)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a network that fails is named, not a traceback
            # TorchScript reports over many lines; the last one names the error raised inside.
            last = ([ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__])[-1]
            raise RunError(f"the network {self.meta.get('source', type(self.net).__name__)} failed on input of "
                           f"shape {tuple(x.shape)}: {last}") from None
        finally:
            if was_training:
                self.net.train()
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise InputError(f"the network returned {getattr(out, 'shape', type(out).__name__)}, expected {tuple(x.shape)}")
        return out.to(x.dtype)

    def denoise(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        """x0_hat, same dtype and device as x, from the network's prediction, clipped or
        thresholded when the denoiser was built so."""
        return self.denoise_eps(x, t, labels)[0]

    def denoise_eps(self, x: torch.Tensor, t, labels=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0_hat, eps_hat) for a DDIM step x_t' = a' x0_hat + s' eps_hat; eps_hat None where it
        follows from x0_hat, (x_t - a x0_hat) / s. A denoiser that holds x0_hat with
        ``clipped_eps=False`` gives the network's own unheld noise estimate, as diffusers'
        ``DDIMScheduler.step`` does by default (``DDIMPipeline``): x_t' = a' clip(x0_hat) + s' eps.
        ``ddim_sample`` takes it from here; Heun's step uses x0_hat alone, as
        ``HeunDiscreteScheduler`` does."""
        out = self.output(x, t, labels)
        a, s = (v.view(-1, 1, 1, 1) for v in self.schedule.coefficients(checks.times(t, x.shape[0]), x))
        if self.prediction == "sample":
            x0, eps = out, None
        elif self.prediction == "epsilon":
            x0, eps = (x - s * out) / a, out
        else:  # v = a eps - s x_0
            x0, eps = a * x - s * out, a * out + s * x
        if self.x0_clip is None or self.clipped_eps:
            return self._held(x0), None
        return self._held(x0), eps if eps is not None else (x - a * x0) / s

    def _held(self, x0: torch.Tensor) -> torch.Tensor:
        """x0_hat clipped or thresholded, as diffusers' DDIMScheduler.step does it (step 4)."""
        if self.x0_clip is None:
            return x0
        if "clip_sample_range" in self.x0_clip:
            r = self.x0_clip["clip_sample_range"]
            return x0.clamp(-r, r)
        # Step for step as diffusers' DDIMScheduler._threshold_sample (0.42) computes it, so that
        # the quantile and the division round as there.
        dtype = x0.dtype
        B = x0.shape[0]
        flat = (x0 if dtype in (torch.float32, torch.float64) else x0.float()).reshape(B, -1)
        p = torch.quantile(flat.abs(), self.x0_clip["dynamic_thresholding_ratio"], dim=1)
        p = torch.clamp(p, min=1, max=self.x0_clip["sample_max_value"]).unsqueeze(1)  # 1: plain clipping to [-1, 1]
        return (torch.clamp(flat, -p, p) / p).reshape(x0.shape).to(dtype)

    def eps(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        """The predicted noise eps_hat = (x_t - a x0_hat) / s (the network's own output when it
        predicts the noise and x0_hat is not clipped)."""
        if self.prediction == "epsilon" and self.x0_clip is None:
            return self.output(x, t, labels)
        a, s = (v.view(-1, 1, 1, 1) for v in self.schedule.coefficients(checks.times(t, x.shape[0]), x))
        return (x - a * self.denoise(x, t, labels)) / s

    def describe(self) -> dict:
        """The settings that decide this network's output (for results files)."""
        keep = {k: self.meta[k] for k in ("network", "weights_sha256", "torchscript", "diffusers") if k in self.meta}
        clip = {} if self.x0_clip is None else {"x0_clip": dict(self.x0_clip),
                                                 "eps": "from the held x0_hat" if self.clipped_eps else "the network's"}
        return {**keep, "conditional": self.takes_labels, "prediction": self.prediction, **clip,
                "schedule": self.schedule.to_dict()}

    def __repr__(self) -> str:
        return f"NetworkDenoiser({self.meta.get('source', type(self.net).__name__)})"


def _x0_clip(clip_sample_range, thresholding) -> dict | None:
    """The checked clipping settings, as results record them (None: x0_hat as predicted)."""

    def number(v, what: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{what} must be a finite number, got {v!r}")
        return float(v)

    if clip_sample_range is not None and thresholding is not None:
        raise InputError("give clip_sample_range or thresholding, not both (diffusers' thresholding replaces clipping)")
    if clip_sample_range is not None:
        r = number(clip_sample_range, "clip_sample_range")
        if r <= 0:
            raise InputError(f"clip_sample_range must be positive, got {r}")
        return {"clip_sample_range": r}
    if thresholding is not None:
        if not isinstance(thresholding, (tuple, list)) or len(thresholding) != 2:
            raise InputError(f"thresholding must be (ratio, sample_max_value), got {thresholding!r}")
        ratio = number(thresholding[0], "the dynamic thresholding ratio")
        top = number(thresholding[1], "sample_max_value")
        if not 0 <= ratio <= 1:
            raise InputError(f"the dynamic thresholding ratio is a quantile in [0, 1], got {ratio}")
        if top <= 0:
            raise InputError(f"sample_max_value must be positive, got {top}")
        return {"dynamic_thresholding_ratio": ratio, "sample_max_value": top}
    return None
