"""diffusers models and schedulers, both ways (docs/theory.md, "Noise schedules" and "The
denoiser contract").

- :func:`from_diffusers` turns a ``UNet2DModel`` (unconditional or class-conditional, predicting
  the noise, the sample or v) and its scheduler into a denoiser that follows the contract. Its
  ``.schedule`` is the scheduler's ``alphas_cumprod`` as a :class:`~elsmachine.noise.DiscreteSchedule`
  with the scheduler's timestep spacing and offset, so ``ddim_sample(den, noise, steps=n)`` runs on
  the timesteps diffusers' ``DDIMScheduler`` takes for n steps and takes its very steps (eta = 0).
  A scheduler that clips (``clip_sample``, diffusers' default) or thresholds (``thresholding``)
  its x0 estimate gives a denoiser that clips or thresholds x0_hat the same way; DDIM then
  re-derives eps from the clipped x0_hat, as ``DDIMScheduler.step(...,
  use_clipped_model_output=True)`` does (see :meth:`NetworkDenoiser.denoise`). Between training
  timesteps (Heun's levels) the model sees the fractional timestep diffusers' ``_sigma_to_t``
  gives (the schedule interpolates log sigma as it does).
- :func:`load_diffusers` reads a folder written by ``save_pretrained``: a pipeline folder with
  ``unet/`` and ``scheduler/``, or a bare UNet folder with a noise schedule given apart.
- :func:`as_diffusers_model` wraps any denoiser (a machine) as a diffusers-style model,
  ``forward(sample, timestep, class_labels=None).sample`` = the predicted noise, so diffusers'
  pipelines (``DDIMPipeline``) run it.

diffusers is an optional extra (``pip install 'elsmachine[diffusers]'``), imported only here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..noise import DiscreteSchedule, noise_schedule
from .adapter import NetworkDenoiser

__all__ = ["from_diffusers", "load_diffusers", "as_diffusers_model", "schedule_of"]


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise InputError("this needs diffusers: pip install 'elsmachine[diffusers]'") from None
    return diffusers


def schedule_of(scheduler) -> DiscreteSchedule:
    """A diffusers scheduler's noise schedule: its alphas_cumprod, timestep spacing, offset and
    final alpha (``set_alpha_to_one``)."""
    ab = getattr(scheduler, "alphas_cumprod", None)
    if ab is None:
        raise InputError(f"{type(scheduler).__name__} holds no alphas_cumprod: not a variance-preserving scheduler")
    cfg = scheduler.config
    final = getattr(scheduler, "final_alpha_cumprod", None)
    return DiscreteSchedule(ab, steps_offset=int(cfg.get("steps_offset", 0) or 0),
                            timestep_spacing=cfg.get("timestep_spacing", "leading"),
                            final_alpha_cumprod=1.0 if final is None else float(final),
                            name=str(cfg.get("beta_schedule", "")))


class _UNetCall(torch.nn.Module):
    """A UNet2DModel called the way NetworkDenoiser calls a network: (x, t in [0, 1], labels)."""

    def __init__(self, unet, schedule: DiscreteSchedule) -> None:
        super().__init__()
        self.unet = unet
        self.schedule = schedule

    def forward(self, x, t, labels=None):
        k = self.schedule.timestep(t.to("cpu", torch.float64))
        # On the grid's times k is a whole training timestep, passed as diffusers passes them.
        k = k.long() if bool((k == k.round()).all()) else k.to(torch.float32)
        return self.unet(x, k.to(x.device), class_labels=labels).sample


def from_diffusers(unet, scheduler, *, meta: dict | None = None,
                   use_clipped_model_output: bool = False) -> NetworkDenoiser:
    """A ``UNet2DModel`` and its scheduler as a denoiser that follows the contract. Where the
    scheduler clips or thresholds x0_hat, ``use_clipped_model_output`` is ``DDIMScheduler.step``'s
    option of that name: False (its default, what ``DDIMPipeline`` runs) keeps the network's own
    noise estimate in a DDIM step, True derives it from the held x0_hat."""
    _diffusers()
    if not hasattr(unet, "config") or not hasattr(scheduler, "config"):
        raise InputError("from_diffusers takes a diffusers UNet2DModel and a diffusers scheduler")
    schedule = schedule_of(scheduler)
    cfg = unet.config
    sc = scheduler.config
    prediction = sc.get("prediction_type", "epsilon")
    # Thresholding replaces clipping where a scheduler has both (DDIMScheduler.step, step 4).
    thresholding = ((float(sc.get("dynamic_thresholding_ratio", 0.995)), float(sc.get("sample_max_value", 1.0)))
                    if sc.get("thresholding", False) else None)
    clip = float(sc.get("clip_sample_range", 1.0)) if sc.get("clip_sample", False) and thresholding is None else None
    classes = cfg.get("num_class_embeds") or 0
    conditional = classes > 0 or cfg.get("class_embed_type") is not None
    unet.eval()
    unet.requires_grad_(False)
    info = {"diffusers": {"unet": type(unet).__name__, "scheduler": type(scheduler).__name__,
                          "sample_size": cfg.get("sample_size"), "in_channels": cfg.get("in_channels")}, **(meta or {})}
    return NetworkDenoiser(_UNetCall(unet, schedule), takes_labels=conditional, schedule=schedule,
                           num_classes=int(classes), prediction=prediction, meta={"source": type(unet).__name__, **info},
                           clip_sample_range=clip, thresholding=thresholding,
                           clipped_eps=bool(use_clipped_model_output))


def load_diffusers(path, *, noise_schedule_spec=None, device="cpu") -> NetworkDenoiser:
    """A folder written by diffusers' ``save_pretrained``: a pipeline (``unet/`` and
    ``scheduler/``), or a bare ``UNet2DModel`` folder with ``noise_schedule_spec`` (a beta
    schedule name, a scheduler config or its folder)."""
    diffusers = _diffusers()
    from ..files import file_digest

    path = Path(path)
    unet_dir = path / "unet" if (path / "unet").is_dir() else path
    if not (unet_dir / "config.json").exists():
        raise InputError(f"{path} is not a diffusers folder: no config.json in it or in unet/")
    try:
        unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir)).to(device)
    except Exception as e:  # noqa: BLE001 - diffusers' own errors, named by file
        raise InputError(f"cannot load a UNet2DModel from {unet_dir}: {e}") from None
    if (path / "scheduler").is_dir():
        try:
            cfg = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
            cls = getattr(diffusers, cfg.get("_class_name", "DDIMScheduler"), diffusers.DDIMScheduler)
            scheduler = cls.from_pretrained(str(path / "scheduler"))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot load the scheduler in {path / 'scheduler'}: {e}") from None
        if noise_schedule_spec is not None:
            raise InputError(f"{path} brings its own scheduler; leave out --noise-schedule")
    elif noise_schedule_spec is None:
        raise InputError(f"{path} is a bare UNet folder: give its noise schedule (--noise-schedule linear, a "
                         f"scheduler config, ...)")
    else:
        schedule = noise_schedule(noise_schedule_spec)
        if not isinstance(schedule, DiscreteSchedule):
            raise InputError("a diffusers UNet counts training timesteps: give a discrete noise schedule")
        scheduler = _scheduler_for(diffusers, schedule, _x0_settings(noise_schedule_spec))
    weights = next(iter(sorted(unet_dir.glob("*.safetensors")) + sorted(unet_dir.glob("*.bin"))), None)
    meta = {"source": str(path)}
    if weights is not None:
        meta["weights_sha256"] = file_digest(weights)
    return from_diffusers(unet, scheduler, meta=meta)


_X0_KEYS = ("clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio", "sample_max_value")


def _x0_settings(spec) -> dict:
    """How the diffusers scheduler config that ``spec`` names (its file or folder) clips or
    thresholds x0, so that a bare UNet with its scheduler's config denoises as the pipeline
    folder would; nothing for any other noise schedule."""
    if not isinstance(spec, (str, Path)):
        return {}
    path = Path(spec)
    if path.is_dir():
        path = path / "scheduler_config.json"
    if path.suffix != ".json" or not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # noise_schedule() has read it already and named any problem
    return {k: d[k] for k in _X0_KEYS if k in d} if "num_train_timesteps" in d else {}


def _scheduler_for(diffusers, schedule: DiscreteSchedule, x0: dict | None = None):
    """A DDIMScheduler holding ``schedule``'s alphas_cumprod exactly, clipping or thresholding x0
    as ``x0`` (keys of ``_X0_KEYS``) says, by default neither."""
    s = diffusers.DDIMScheduler(num_train_timesteps=schedule.T, steps_offset=schedule.steps_offset,
                                timestep_spacing=schedule.timestep_spacing,
                                set_alpha_to_one=schedule.final_alpha_cumprod == 1.0,
                                **{"clip_sample": False, **(x0 or {})})
    s.alphas_cumprod = schedule.alphas_cumprod.clone()
    s.final_alpha_cumprod = torch.tensor(schedule.final_alpha_cumprod, dtype=torch.float64)
    return s


@dataclass
class _Output:
    sample: torch.Tensor


@dataclass
class _Config:
    sample_size: int | tuple
    in_channels: int
    out_channels: int


class _MachineModel(torch.nn.Module):
    """A denoiser as a diffusers-style noise-prediction model on a discrete schedule."""

    def __init__(self, denoiser, sample_size, channels: int) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.config = _Config(sample_size=sample_size, in_channels=channels, out_channels=channels)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(device, dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def forward(self, sample: torch.Tensor, timestep, class_labels=None, return_dict: bool = True):
        sched = self.denoiser.schedule
        k = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)
        t = sched.time_of_timestep(k).expand(sample.shape[0]) if k.numel() == 1 else sched.time_of_timestep(k)
        x0 = self.denoiser.denoise(sample, t, labels=class_labels)
        a, s = (v.view(-1, 1, 1, 1) for v in sched.coefficients(t, sample))
        eps = (sample - a * x0) / s
        return _Output(sample=eps) if return_dict else (eps,)


def as_diffusers_model(denoiser, *, sample_size=None) -> torch.nn.Module:
    """``denoiser`` (a machine, on a :class:`~elsmachine.noise.DiscreteSchedule`, e.g. a
    scheduler's :func:`schedule_of`) as a model diffusers' pipelines call:
    ``model(sample, timestep, class_labels=None).sample`` is the predicted noise."""
    sched = getattr(denoiser, "schedule", None)
    if not isinstance(sched, DiscreteSchedule):
        raise InputError("as_diffusers_model needs a denoiser on a discrete schedule (the scheduler's: "
                         "machine = make_machine(..., schedule=elsmachine.schedule_of(scheduler)))")
    shape = getattr(denoiser, "image_shape", None)
    if sample_size is None:
        if shape is None:
            raise InputError("give sample_size= for a denoiser that does not say its image shape")
        sample_size = shape[1] if shape[1] == shape[2] else tuple(shape[1:])
    return _MachineModel(denoiser, sample_size, shape[0] if shape is not None else 3)
