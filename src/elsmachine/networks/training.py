"""Training the convolutional diffusion networks (docs/theory.md, "Networks";
as the paper trains them: Adam, batch 128).

Noise prediction on the cosine schedule: t ~ U(0, 1), x_t = a x_0 + s eps,
loss = mean (eps_hat(x_t, t, y) - eps)^2.

Resumable exactly: the data order of epoch e comes from a generator seeded by (seed, e), and
the times and noise of step i from one seeded by (seed, i); the weights, the optimizer state
and the progress are written together, atomically, into ``state.safetensors``, so a run
stopped at any checkpoint continues with the very updates an uninterrupted run would make.
``model.safetensors`` and ``config.json`` beside it are the checkpoint other commands load.
With ``ema`` > 0 an exponential moving average of the weights is kept (and saved with the
state, so resume stays exact), and the loadable checkpoint holds the averaged weights, which
sample better than the last step's. ``init_from`` starts from another checkpoint's weights.
Mixed precision is the caller's choice (``autocast=torch.bfloat16``, as ``els train`` does on
a GPU); the loss and the optimizer state stay float32.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..datasets import Dataset
from ..errors import InputError, RunError
from ..noise import CosineSchedule, NoiseSchedule
from ..files import atomic_write, write_json
from .architectures import NetConfig, build_network
from .checkpoints import FORMAT_VERSION

__all__ = ["TrainConfig", "train"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300
    batch_size: int = 128
    lr: float = 1e-4
    seed: int = 0
    grad_clip: float = 1.0  # 0 turns clipping off
    checkpoint_every: int = 0  # steps between checkpoints; 0 = once per epoch
    ema: float = 0.0  # decay of the moving average of the weights; 0 = none

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate must be a positive number, got {self.lr}")
        if self.checkpoint_every < 0 or self.grad_clip < 0:
            raise InputError("checkpoint_every and grad_clip must be >= 0")
        if not 0.0 <= self.ema < 1.0:
            raise InputError(f"ema must be a decay in [0, 1), got {self.ema}")


def _rng(*parts: int) -> torch.Generator:
    g = torch.Generator()
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return g.manual_seed(seed)


def _save_state(out: Path, net, opt, ema, progress: dict, meta: dict) -> None:
    """Weights, their moving average, optimizer state and progress in one file, then the
    loadable checkpoint (the averaged weights where there are any); each file written
    atomically, the state first."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for name, v in st.items():
            tensors[f"optim.{pid}.{name}"] = (v if isinstance(v, torch.Tensor) else torch.tensor(v)).detach().cpu().contiguous()
    info = {"progress": progress, "param_groups": osd["param_groups"], **meta}
    atomic_write(out / "state.safetensors", save(tensors, metadata={"elsmachine": json.dumps(info)}))
    which = "ema." if ema is not None else "model."
    weights = {k[len(which):]: v for k, v in tensors.items() if k.startswith(which)}
    atomic_write(out / "model.safetensors", save(weights, metadata={"step": str(progress["step"])}))
    write_json(out / "config.json", {**meta, "progress": progress})


def _saved_info(out: Path) -> dict:
    """The settings and progress of a saved run, read without loading any weights."""
    from safetensors import safe_open

    path = out / "state.safetensors"
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads(f.metadata()["elsmachine"])
    except FileNotFoundError:
        raise InputError(f"nothing to resume: {path} does not exist") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read training state {path}: {e}") from None


def _load_state(out: Path, net, opt, ema) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(out / "state.safetensors"))
    net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        for k, v in ema.items():
            v.copy_(tensors[f"ema.{k}"])
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": _saved_info(out)["param_groups"]})


def _init_weights(net, source, cfg: NetConfig) -> dict:
    """Load another checkpoint's weights into ``net``; returns what to record of them."""
    from safetensors.torch import load_file

    from ..files import file_digest
    from .checkpoints import _resolve

    folder = _resolve(source)
    weights = folder / "model.safetensors" if folder.is_dir() else folder
    try:
        other = NetConfig.from_dict(json.loads(weights.with_name("config.json").read_text())["network"])
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"--init-from {source}: not a checkpoint with a config.json ({e})") from None
    if other != cfg:
        raise InputError(f"--init-from {source}: its network {other.to_dict()} differs from this one {cfg.to_dict()}")
    net.load_state_dict(load_file(str(weights)))
    return {"source": str(source), "weights_sha256": file_digest(weights)}


def train(
    net_cfg: NetConfig,
    cfg: TrainConfig,
    data: Dataset,
    out_dir,
    *,
    device="cpu",
    resume: bool = False,
    schedule: NoiseSchedule | None = None,
    autocast: torch.dtype | None = None,
    init_from=None,
    on_step: Callable[[dict], None] | None = None,
) -> Path:
    """Train a network on ``data`` and write checkpoints into ``out_dir``; returns the folder.

    ``resume`` continues from ``out_dir/state.safetensors`` (the settings must agree, and
    ``cfg.epochs`` may not be fewer than the run has trained; both are checked before any weights
    are read). ``autocast``: a lower precision for the forward pass (e.g. torch.bfloat16), or
    None for full precision. ``init_from``: a checkpoint (folder or bundled name) of the same
    architecture whose weights a new run starts from. ``on_step`` sees {"epoch", "step",
    "steps", "loss"} after every step. A loss that is not finite stops the run with a RunError;
    the last checkpoint written before it stays in ``out_dir``.
    """
    out = Path(out_dir)
    schedule = schedule or CosineSchedule()
    device = torch.device(device)
    C, H, W = data.images.shape[1:]
    if (C, H, W) != (net_cfg.channels, net_cfg.image_size, net_cfg.image_size):
        raise InputError(f"the network expects {net_cfg.channels}x{net_cfg.image_size}x{net_cfg.image_size} images, "
                         f"the data are {C}x{H}x{W}")
    if net_cfg.num_classes > 0:
        if data.labels is None:
            raise InputError(f"a class-conditional network needs labels; dataset {data.name} has none")
        if int(data.labels.max()) >= net_cfg.num_classes or int(data.labels.min()) < 0:
            raise InputError(f"labels must lie in 0..{net_cfg.num_classes - 1}")
    meta = {
        "version": FORMAT_VERSION,
        "network": net_cfg.to_dict(),
        "train": asdict(cfg),
        "schedule": schedule.to_dict(),
        "dataset": data.describe(),
    }
    torch.manual_seed(cfg.seed)  # the initial weights
    net = build_network(net_cfg).to(device)
    resuming = resume and (out / "state.safetensors").exists()
    if not resume and (out / "state.safetensors").exists():
        raise InputError(f"{out} already holds a training run; pass --resume to continue it or choose another folder")
    if init_from is not None and not resuming:
        meta["init_from"] = _init_weights(net, init_from, net_cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()} if cfg.ema > 0 else None
    progress = {"epoch": 0, "step": 0, "epoch_losses": [], "done": False}
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    if resuming:
        info = _saved_info(out)
        for key in ("network", "train", "dataset", "schedule"):
            old, new = info.get(key), meta[key]
            if key == "train":  # more epochs may be asked for; nothing else may change
                old = {**asdict(TrainConfig()), **(old or {})}  # fields added since that run: defaults
                old = {k: v for k, v in old.items() if k != "epochs"}
                new = {k: v for k, v in new.items() if k != "epochs"}
            if key == "network" and old:  # fields added since that run take their defaults
                old = NetConfig.from_dict(old).to_dict()
            if key == "dataset":  # what runs of older versions recorded of their data
                new = {k: v for k, v in new.items() if k in (old or {})}
            if old != new:
                raise InputError(f"cannot resume: the {key} settings differ from those in {out}/state.safetensors "
                                 f"(saved {old}, now {new})")
        # Fewer epochs than the run already has would record a config its weights do not match.
        done = int(info["progress"]["step"])
        if done > cfg.epochs * steps_per_epoch:
            raise InputError(f"cannot resume {out} with --epochs {cfg.epochs}: it has already trained "
                             f"{done / steps_per_epoch:g} epochs; give --epochs {math.ceil(done / steps_per_epoch)} "
                             f"or more")
        if "init_from" in info:
            meta["init_from"] = info["init_from"]
        _load_state(out, net, opt, ema)
        progress = info["progress"]
        progress["done"] = False
    total = cfg.epochs * steps_per_epoch
    images = data.images
    labels = data.labels
    use_labels = net_cfg.num_classes > 0
    net.train()
    step = progress["step"]
    running = progress.get("running", 0.0)  # sum of this epoch's losses so far
    while step < total:
        epoch = step // steps_per_epoch
        perm = torch.randperm(len(data), generator=_rng(cfg.seed, 1, epoch))
        i = step - epoch * steps_per_epoch
        while i < steps_per_epoch:
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            g = _rng(cfg.seed, 2, step)
            x0 = images[idx]
            t = torch.rand(len(idx), generator=g, dtype=torch.float64)
            eps = torch.randn(x0.shape, generator=g)
            a = schedule.alpha(t).float().view(-1, 1, 1, 1)
            s = schedule.sigma(t).float().view(-1, 1, 1, 1)
            xt = (a * x0 + s * eps).to(device)
            y = labels[idx].to(device) if use_labels else None
            with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                pred = net(xt, t.float().to(device), y)
            loss = torch.mean((pred.float() - eps.to(device)) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                # The usual warm-up: early averages forget the random initial weights faster.
                decay = min(cfg.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for k, v in net.state_dict().items():
                        ema[k].lerp_(v, 1.0 - decay)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise RunError(f"training diverged at step {step} (loss {lv}); lower the learning rate")
            running += lv
            step += 1
            i += 1
            progress["step"] = step
            if on_step is not None:
                on_step({"epoch": epoch, "step": step, "steps": total, "loss": lv})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and i < steps_per_epoch:
                progress["running"] = running
                _save_state(out, net, opt, ema, progress, meta)
        progress["epoch"] = epoch + 1
        progress["epoch_losses"] = progress["epoch_losses"][: epoch] + [running / steps_per_epoch]
        progress["running"] = running = 0.0
        progress["done"] = step >= total
        _save_state(out, net, opt, ema, progress, meta)
    if not progress.get("done"):
        progress["done"] = True
        _save_state(out, net, opt, ema, progress, meta)
    return out
