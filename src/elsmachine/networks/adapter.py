"""A trained network behind the one denoiser contract (docs/theory.md, "The denoiser contract").

A network predicting the noise eps of x_t = a x_0 + s eps (``prediction="epsilon"``), the clean
sample (``"sample"``) or v = a eps - s x_0 (``"v_prediction"``) answers

    denoise(x, t, labels) -> x0_hat = (x_t - s eps_hat) / a,  = the sample,  = a x_t - s v_hat,

so samplers, calibration and metrics treat it exactly like a score machine. Dtype and device
follow the input: the network runs in x's dtype on x's device (its weights are moved there
when they differ), so float64 input is computed in float64 throughout.
"""

from __future__ import annotations

import logging

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
    """

    def __init__(self, net, *, takes_labels: bool = False, schedule: NoiseSchedule | None = None,
                 padding: str | None = None, num_classes: int = 0, prediction: str = "epsilon",
                 meta: dict | None = None) -> None:
        if prediction not in PREDICTIONS:
            raise InputError(f"unknown prediction type {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
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
        """x0_hat, same dtype and device as x, from the network's prediction."""
        out = self.output(x, t, labels)
        if self.prediction == "sample":
            return out
        a, s = (v.view(-1, 1, 1, 1) for v in self.schedule.coefficients(checks.times(t, x.shape[0]), x))
        if self.prediction == "epsilon":
            return (x - s * out) / a
        return a * x - s * out  # v = a eps - s x_0

    def eps(self, x: torch.Tensor, t, labels=None) -> torch.Tensor:
        """The predicted noise eps_hat = (x_t - a x0_hat) / s (the network's own output when it
        predicts the noise)."""
        if self.prediction == "epsilon":
            return self.output(x, t, labels)
        a, s = (v.view(-1, 1, 1, 1) for v in self.schedule.coefficients(checks.times(t, x.shape[0]), x))
        return (x - a * self.denoise(x, t, labels)) / s

    def describe(self) -> dict:
        """The settings that decide this network's output (for results files)."""
        keep = {k: self.meta[k] for k in ("network", "weights_sha256", "torchscript", "diffusers") if k in self.meta}
        return {**keep, "conditional": self.takes_labels, "prediction": self.prediction,
                "schedule": self.schedule.to_dict()}

    def __repr__(self) -> str:
        return f"NetworkDenoiser({self.meta.get('source', type(self.net).__name__)})"
