"""Input checks shared by every layer: each message names what was wrong.

Every public entry point validates here, before any tensor work, so bad input ends in one
:class:`~elsmachine.errors.InputError` naming the problem rather than a traceback from torch.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from .errors import InputError

PADDINGS = ("zeros", "circular")


def images_tensor(images, what: str = "images", *, uint8: bool = False) -> torch.Tensor:
    """A floating [N, C, H, W] tensor with N >= 1 and only finite values (or, with ``uint8``, a
    uint8 one: pixel values 0..255 standing for v / 127.5 - 1). A numpy array, memory-mapped
    or not, is shared, not copied."""
    if not isinstance(images, torch.Tensor):
        try:
            with warnings.catch_warnings():
                # A read-only array (np.memmap(..., mode="r")) is shared as it is: machines never
                # write into their training images, so torch's warning about it does not apply.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                images = torch.as_tensor(images)
        except Exception as e:  # noqa: BLE001 - anything torch cannot read is bad input
            raise InputError(f"{what} must be a tensor or array, got {type(images).__name__}") from e
    if images.dim() != 4:
        raise InputError(f"{what} must have shape [N, C, H, W], got shape {tuple(images.shape)}")
    if not images.is_floating_point() and not (uint8 and images.dtype == torch.uint8):
        raise InputError(f"{what} must be floating point in [-1, 1]{' or uint8 in 0..255' if uint8 else ''}, "
                         f"got dtype {images.dtype}")
    if images.shape[0] < 1 or min(images.shape[1:]) < 1:
        raise InputError(f"{what} is empty: shape {tuple(images.shape)}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise InputError(f"{what} contains NaN or inf")
    return images


def labels_tensor(labels, n: int, what: str = "labels") -> torch.Tensor:
    """An int64 [n] tensor (a single integer is repeated n times)."""
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{what} must be a sequence of integers, got {type(labels).__name__}") from e
    if labels.dim() == 0:
        labels = labels.reshape(1).expand(n) if n >= 1 else labels.reshape(1)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise InputError(f"{what} must have shape [{n}], got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"{what} must be integers, got dtype {labels.dtype}")
    return labels.to(torch.long)


def patch_size(k, what: str = "patch_size") -> int:
    """The one check of a patch size: an odd positive integer (bool, float and str refused)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InputError(f"{what} must be an odd positive integer, got {k!r}")
    k = int(k)
    if k < 1 or k % 2 == 0:
        raise InputError(f"{what} must be an odd positive integer, got {k}")
    return k


def positive_int(v, what: str) -> int:
    """A positive integer (bool refused)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise InputError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def padding(p) -> str:
    if p not in PADDINGS:
        raise InputError(f"unknown padding {p!r}; choose 'zeros' or 'circular'")
    return p


def query(x, shape: tuple[int, int, int]) -> torch.Tensor:
    """x as [B, C, H, W] matching the training images' (C, H, W), finite, and small enough that
    its squared distance to any training patch is finite in x's dtype."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a torch tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"x must have shape [B, C, H, W], got shape {tuple(x.shape)}")
    if tuple(x.shape[1:]) != tuple(shape):
        raise InputError(
            f"x has images of shape {tuple(x.shape[1:])} but the training images are {tuple(shape)} (C, H, W)"
        )
    if not x.is_floating_point():
        raise InputError(f"x must be floating point, got dtype {x.dtype}")
    if x.shape[0] < 1:
        raise InputError("x is an empty batch")
    # The machines compare x with training patches in x's dtype. Over any window, the distance
    # |P(x) - a P(Y_n)| is at most |x| + sqrt(C H W) (triangle inequality; a <= 1 and training
    # pixels lie in [-1, 1]), so |x| <= sqrt(finfo.max) - sqrt(C H W) keeps every squared distance
    # below finfo(x.dtype).max; above it a distance can be inf and the softmax weights NaN. One
    # reduction, taken in float64 so the check cannot overflow itself, also finds NaN and inf
    # (they make the norm NaN or inf, which fails the comparison).
    norm = torch.linalg.vector_norm(x.detach(), dim=(1, 2, 3), dtype=torch.float64)  # [B]
    limit = math.sqrt(torch.finfo(x.dtype).max) - math.sqrt(math.prod(shape))
    over = ~(norm <= limit)
    if bool(over.any()):
        finite = torch.isfinite(x.detach()).flatten(1).all(dim=1)
        if not bool(finite.all()):
            raise InputError(f"x contains NaN or inf (image {int(torch.nonzero(~finite)[0, 0])})")
        b = int(torch.nonzero(over)[0, 0])
        # Scaled by its largest value first: the norm of a float64 image near finfo.max is itself inf.
        xb = x[b].detach().to(torch.float64)
        peak = xb.abs().max()
        size = float(peak * torch.linalg.vector_norm(xb / peak))
        raise InputError(f"x is too large for {x.dtype}: image {b} has norm {size:.3g}, so its squared "
                         f"distance to a training patch could overflow (its norm must stay below {limit:.3g})")
    return x


def times(t, batch: int) -> torch.Tensor:
    """t as a float64 CPU tensor [batch] with every value in (0, 1]."""
    if isinstance(t, torch.Tensor):
        tt = t.detach().to("cpu", torch.float64)
        if tt.dim() == 0:
            tt = tt.reshape(1).expand(batch)
        if tt.dim() != 1 or tt.shape[0] != batch:
            raise InputError(f"t must be a float or a tensor of shape [{batch}], got shape {tuple(t.shape)}")
    elif isinstance(t, numbers.Real) and not isinstance(t, bool):
        tt = torch.full((batch,), float(t), dtype=torch.float64)
    else:
        raise InputError(f"t must be a float or a tensor, got {type(t).__name__}")
    bad = ~((tt > 0) & (tt <= 1))
    if bool(bad.any()):
        v = tt[bad][0].item()
        raise InputError(f"t must lie in (0, 1], got {v}" + (" (t = 0 has no noise to remove)" if v == 0 else ""))
    return tt.contiguous()


def memory_budget(b) -> int:
    if isinstance(b, bool) or not isinstance(b, numbers.Real) or not math.isfinite(b) or b < 1 << 20:
        raise InputError(f"memory_budget must be a number of bytes >= 1 MiB, got {b!r}")
    return int(b)
