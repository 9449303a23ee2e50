"""The score machines: IS, LS, ELS (circular) and boundary-broken ELS (zeros).

DESIGN.md, "The score machines". Every machine is a denoiser returning
x0_hat = E[x_0 | x_t] under an empirical model of the training set Y [N, C, H, W]:

    x0_hat(q) = sum over candidates (n, p) of w(n, p) * Y_n[:, p],
    w(n, p)  = softmax over candidates of -|P_q(x_t) - a P_p(Y_n)|^2 / (2 s^2),

and they differ only in which candidates (n, p) an output pixel q sees:

    IS   whole images n (the "patch" is the whole image)
    LS   (n, q): the same pixel of every image
    ELS  circular: every pixel of every image; zeros: every pixel with q's padding footprint

Dropping the term |P_q(x_t)|^2, which is the same for every candidate of a query, leaves
(a / s^2) q.y - (a^2 / (2 s^2)) |y|^2: attention with queries [(a/s^2) q, -(a^2/(2 s^2))] and
keys [y, |y|^2]. Both sides are first shifted by the training mean (q - a mu, y - mu), which
leaves q - a y unchanged but makes the norms small, so the dot products lose less to rounding.
Each pixel class (all pixels that see the same candidates) is one group of the engine.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from . import _validate as check
from . import displacement
from .engine import attend
from .errors import InputError
from .patches import footprint_classes, gather_patches
from .schedule import CosineSchedule

__all__ = ["ScoreMachine", "IdealMachine", "LocalMachine", "ELSMachine", "Trace", "DEFAULT_MEMORY_BUDGET", "MACHINES", "BACKENDS", "make_machine"]

DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes of candidate keys held at once (cache + one chunk)

# "auto": the compiled displacement kernel where it runs (CPU, float32/64), else attention.
# "native": the displacement kernel (error where unavailable); "fused", "explicit": attention.
BACKENDS = ("auto", "native", "fused", "explicit")


@dataclass
class Trace:
    """Where each output pixel of one denoiser call comes from. All fields are [B, H, W].

    source_image: int64 index into the machine's training set of the candidate with the
        largest weight; source_pixel: its flat pixel index i * W + j in that image;
    weight: that candidate's weight; effective: exp(entropy of the weights), the effective
        number of candidates.
    """

    source_image: torch.Tensor
    source_pixel: torch.Tensor
    weight: torch.Tensor
    effective: torch.Tensor


class ScoreMachine:
    """A closed-form denoiser over a training set. Subclasses say which candidates a pixel sees.

    Args:
        images: training set, float [N, C, H, W] in [-1, 1].
        labels: optional int [N] class labels, for class-conditional denoising.
        schedule: the noise schedule (default: the paper's legacy cosine).
        memory_budget: bytes of candidate keys the machine may hold at once; above it keys are
            built and streamed in chunks of training images.
        backend: "auto" (default: the compiled displacement kernel where it runs, else the
            attention engine), "native" (the kernel, or an error), "fused" or "explicit"
            (attention engine variants; see :mod:`elsmachine.engine`).
    """

    name = "machine"

    def __init__(
        self,
        images,
        *,
        labels=None,
        schedule: CosineSchedule | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        backend: str = "auto",
    ) -> None:
        self.images = check.images_tensor(images)
        n = self.images.shape[0]
        self.labels = None if labels is None else check.labels_tensor(labels, n, "training labels").cpu()
        self.schedule = schedule if schedule is not None else CosineSchedule()
        if not isinstance(self.schedule, CosineSchedule):
            raise InputError(f"schedule must be a CosineSchedule, got {type(self.schedule).__name__}")
        self.memory_budget = check.memory_budget(memory_budget)
        if backend not in BACKENDS:
            raise InputError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        self._attention_backend = backend if backend in ("fused", "explicit") else "auto"
        self._class_index: dict[int, torch.Tensor] = {}
        if self.labels is not None:
            for c in torch.unique(self.labels).tolist():
                self._class_index[int(c)] = torch.nonzero(self.labels == c).flatten()
        self._data: dict = {}
        self._keys: OrderedDict = OrderedDict()
        self._keys_bytes = 0

    # ------------------------------------------------------------------ public contract
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the training images."""
        return tuple(self.images.shape[1:])

    @property
    def classes(self) -> list[int]:
        """Class labels that have training images (empty for an unlabelled machine)."""
        return sorted(self._class_index)

    def denoise(self, x: torch.Tensor, t, patch_size: int | None = None, labels=None) -> torch.Tensor:
        """x0_hat = E[x_0 | x_t = x]: [B, C, H, W], same dtype and device as ``x``.

        Args:
            x: noisy images [B, C, H, W].
            t: a float or a [B] tensor of times in (0, 1].
            patch_size: odd window size, overriding the machine's own (patch machines only).
            labels: int64 [B]; each image is then denoised against its class only.
        """
        return self._run(x, t, patch_size, labels, trace=False)[0]

    __call__ = denoise

    def denoise_traced(self, x: torch.Tensor, t, patch_size: int | None = None, labels=None):
        """Like :meth:`denoise`, also returning a :class:`Trace` of where each pixel comes from."""
        return self._run(x, t, patch_size, labels, trace=True)

    def eps(self, x: torch.Tensor, t, patch_size: int | None = None, labels=None) -> torch.Tensor:
        """eps_hat = (x_t - a x0_hat) / s."""
        a, s = self._coefficients(t, x)
        return (x - a * self.denoise(x, t, patch_size, labels)) / s

    def score(self, x: torch.Tensor, t, patch_size: int | None = None, labels=None) -> torch.Tensor:
        """score = -eps_hat / s."""
        a, s = self._coefficients(t, x)
        return -(x - a * self.denoise(x, t, patch_size, labels)) / (s * s)

    def _coefficients(self, t, x):
        tt = check.times(t, x.shape[0])
        a = self.schedule.alpha(tt).to(x.dtype).to(x.device).view(-1, 1, 1, 1)
        s = self.schedule.sigma(tt).to(x.dtype).to(x.device).view(-1, 1, 1, 1)
        return a, s

    # ------------------------------------------------------------------ shared machinery
    def _resolve_patch_size(self, patch_size):
        if patch_size is not None:
            raise InputError(f"{type(self).__name__} has no patch size; got patch_size={patch_size!r}")
        return None

    def _run(self, x, t, patch_size, labels, trace):
        x = check.query(x, self.image_shape)
        B = x.shape[0]
        tt = check.times(t, B)
        k = self._resolve_patch_size(patch_size)
        # a and s in float64 first: s^2 is small late in sampling and 1 - abar loses digits.
        a = self.schedule.alpha(tt).to(device=x.device, dtype=x.dtype)
        s = self.schedule.sigma(tt).to(device=x.device, dtype=x.dtype)
        out = torch.empty_like(x)
        H, W = x.shape[2:]
        tr = None
        if trace:
            tr = Trace(
                source_image=torch.empty(B, H, W, dtype=torch.long, device=x.device),
                source_pixel=torch.empty(B, H, W, dtype=torch.long, device=x.device),
                weight=x.new_empty(B, H, W),
                effective=x.new_empty(B, H, W),
            )
        for bidx, cls in self._subsets(labels, B):
            sel = bidx.to(x.device)
            x0, sub = self._denoise_subset(x[sel], a[sel], s[sel], k, cls, trace)
            out[sel] = x0
            if trace:
                for f in ("source_image", "source_pixel", "weight", "effective"):
                    dest = getattr(tr, f)
                    dest[sel] = getattr(sub, f).to(dest.dtype)
        return out, tr

    def _subsets(self, labels, B):
        """(batch indices, class or None) pairs: each batch element meets only its class."""
        if labels is None:
            return [(torch.arange(B), None)]
        if self.labels is None:
            raise InputError("labels were given but the machine was built without training labels")
        labels = check.labels_tensor(labels, B, "labels").cpu()
        out = []
        for c in torch.unique(labels).tolist():
            if int(c) not in self._class_index:
                raise InputError(f"class {c} has no training images (classes present: {self.classes})")
            out.append((torch.nonzero(labels == c).flatten(), int(c)))
        return out

    def _training(self, dtype, device, cls):
        """Training images of class ``cls`` (all if None) in x's dtype and device, their global
        indices, and the per-channel training mean used to centre both sides."""
        key = (dtype, device, cls)
        hit = self._data.get(key)
        if hit is None:
            idx = torch.arange(self.images.shape[0]) if cls is None else self._class_index[cls]
            Y = self.images[idx].to(device=device, dtype=dtype)
            mu = self.images.to(torch.float64).mean(dim=(0, 2, 3)).to(device=device, dtype=dtype)
            hit = (Y, idx, mu)
            self._data[key] = hit
        return hit

    def _cached_keys(self, key, nbytes, build):
        """Keys for one block: cached when they fit half the budget, least recently used evicted.
        ``nbytes`` is an upper bound on the size ``build()`` will return."""
        if key is None:
            return build() if nbytes <= self.memory_budget // 2 else None
        hit = self._keys.get(key)
        if hit is not None:
            self._keys.move_to_end(key)
            return hit
        if nbytes > self.memory_budget // 2:
            return None
        while self._keys and self._keys_bytes + nbytes > self.memory_budget // 2:
            _, old = self._keys.popitem(last=False)
            self._keys_bytes -= old.numel() * old.element_size()
        keys = build()
        self._keys[key] = keys
        self._keys_bytes += keys.numel() * keys.element_size()
        return keys

    def clear_cache(self) -> None:
        """Drop cached keys and converted training sets (they are rebuilt on demand)."""
        self._keys.clear()
        self._keys_bytes = 0
        self._data.clear()

    def _denoise_subset(self, x, a, s, k, cls, trace):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        C, H, W = self.image_shape
        return f"{type(self).__name__}(N={self.images.shape[0]}, C={C}, H={H}, W={W})"


class IdealMachine(ScoreMachine):
    """IS, the ideal score machine: the exact denoiser of the empirical training distribution.

    Candidates are whole training images; weights softmax_n(-|x_t - a Y_n|^2 / (2 s^2)).
    """

    name = "ideal"

    def _denoise_subset(self, x, a, s, k, cls, trace):
        Y, gidx, mu = self._training(x.dtype, x.device, cls)
        B, C, H, W = x.shape
        D = C * H * W
        q = x.new_empty(1, B, D + 1)
        q[0, :, :D] = (x - (a.view(-1, 1, 1, 1) * mu.view(1, -1, 1, 1))).reshape(B, D) * (a / s**2).view(-1, 1)
        q[0, :, D] = -(a**2) / (2 * s**2)

        def build():
            yc = (Y - mu.view(1, -1, 1, 1)).reshape(1, -1, D)
            return torch.cat([yc, (yc * yc).sum(-1, keepdim=True)], dim=-1)  # [1, N, D + 1]

        n = Y.shape[0]
        key = ("ideal", x.dtype, x.device, cls)
        keys = self._cached_keys(key, n * (D + 1) * x.element_size(), build)
        chunks = [keys] if keys is not None else self._image_chunks(Y, mu, D, x.element_size())
        res = attend(q, chunks, slice(0, D), trace=trace, backend=self._attention_backend)
        x0 = (res.out[0].view(B, C, H, W) + mu.view(1, -1, 1, 1)).to(x.dtype)
        if not trace:
            return x0, None
        src = gidx.to(x.device)[res.top_index[0]]  # [B]
        pix = torch.arange(H * W, device=x.device).view(1, H, W).expand(B, H, W)
        return x0, Trace(
            source_image=src.view(B, 1, 1).expand(B, H, W).clone(),
            source_pixel=pix.clone(),
            weight=res.top_weight[0].view(B, 1, 1).expand(B, H, W).clone(),
            effective=res.entropy[0].exp().view(B, 1, 1).expand(B, H, W).clone(),
        )

    def _image_chunks(self, Y, mu, D, itemsize):
        per = max(1, (self.memory_budget // 4) // ((D + 1) * itemsize))
        for n0 in range(0, Y.shape[0], per):
            yc = (Y[n0 : n0 + per] - mu.view(1, -1, 1, 1)).reshape(1, -1, D)
            yield torch.cat([yc, (yc * yc).sum(-1, keepdim=True)], dim=-1)


class _PatchMachine(ScoreMachine):
    """Shared body of LS and ELS: patches, pixel classes as engine groups, streamed keys.

    Approximate modes (opt-in; ``els bench`` reports their speed-up and their fidelity to the
    exact machine, which stays well below r^2 = 0.999 on MNIST):

    - ``approx_images``: each noisy image meets only the patches of its ``approx_images``
      nearest training images by whole-image distance |x_t - a Y_n|, chosen afresh at every call.
    - ``approx_radius`` (ELS, compiled kernel): pixel q meets only the candidates at most
      ``approx_radius`` pixels away along each axis (around the torus for circular padding);
      0 is LS, a radius as large as the image is exact ELS.
    """

    def __init__(
        self,
        images,
        patch_size: int | None = None,
        padding: str = "zeros",
        *,
        labels=None,
        schedule: CosineSchedule | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        backend: str = "auto",
        approx_images: int | None = None,
        approx_radius: int | None = None,
    ) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, backend=backend)
        self.patch_size = None if patch_size is None else check.patch_size(patch_size)
        self.padding = check.padding(padding)
        if approx_images is not None and (isinstance(approx_images, bool) or not isinstance(approx_images, int) or approx_images < 1):
            raise InputError(f"approx_images must be a positive integer or None, got {approx_images!r}")
        self.approx_images = approx_images
        if approx_radius is not None:
            if isinstance(approx_radius, bool) or not isinstance(approx_radius, int) or approx_radius < 0:
                raise InputError(f"approx_radius must be a non-negative integer or None, got {approx_radius!r}")
            if self.name != "els":
                raise InputError("approx_radius applies to ELS only (LS candidates sit at the query pixel already)")
            if backend not in ("auto", "native"):
                raise InputError(f"approx_radius needs the native backend, not backend={backend!r}")
        self.approx_radius = approx_radius
        self._layouts: dict = {}

    def _resolve_patch_size(self, patch_size):
        if patch_size is None:
            if self.patch_size is None:
                raise InputError(
                    f"{type(self).__name__} needs a patch size: pass patch_size= to the machine or to denoise"
                )
            return self.patch_size
        return check.patch_size(patch_size)

    def _groups(self, H: int, W: int, k: int) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """Pixel classes: flat pixel indices that see the same candidate pixels."""
        raise NotImplementedError

    def _layout(self, H: int, W: int, k: int) -> list[torch.Tensor]:
        """The pixel classes, stacked into blocks [G, P] of classes with the same size."""
        key = (H, W, k)
        if key not in self._layouts:
            by_size: dict[int, list[torch.Tensor]] = {}
            for g in self._groups(H, W, k):
                by_size.setdefault(g.numel(), []).append(g)
            self._layouts[key] = [torch.stack(gs) for _, gs in sorted(by_size.items(), reverse=True)]
        return self._layouts[key]

    def _block_keys(self, Y, mu_vec, k, pos):
        """Keys [G, n * P, C*k*k + 1] of the images Y [n, C, H, W] at the block's pixels.

        Candidate j of group g is image j // P at pixel pos[g, j % P]."""
        G, P = pos.shape
        n = Y.shape[0]
        Dp = mu_vec.numel()
        p = gather_patches(Y, k, self.padding, pos.reshape(-1)) - mu_vec  # [n, G*P, Dp]
        keys = Y.new_empty(G, n, P, Dp + 1)
        keys[..., :Dp] = p.view(n, G, P, Dp).permute(1, 0, 2, 3)
        keys[..., Dp] = (p * p).sum(-1).view(n, G, P).permute(1, 0, 2)
        return keys.view(G, n * P, Dp + 1)

    def _key_chunks(self, Y, mu_vec, k, pos, cache_key):
        G, P = pos.shape
        per_image = G * P * (mu_vec.numel() + 1) * Y.element_size()
        keys = self._cached_keys(cache_key, per_image * Y.shape[0], lambda: self._block_keys(Y, mu_vec, k, pos))
        if keys is not None:
            yield keys
            return
        per = max(1, (self.memory_budget // 4) // per_image)
        for n0 in range(0, Y.shape[0], per):
            yield self._block_keys(Y[n0 : n0 + per], mu_vec, k, pos)

    def _use_native(self, x) -> bool:
        if self.backend == "native":
            if not displacement.available(x):
                from .native import status

                raise InputError(
                    f"the native backend needs float32/float64 CPU tensors and the compiled kernel "
                    f"(kernel: {status()}; x: {x.dtype} on {x.device})"
                )
            return True
        return self.backend == "auto" and displacement.available(x)

    def _denoise_subset(self, x, a, s, k, cls, trace):
        Y, gidx, mu = self._training(x.dtype, x.device, cls)
        if self.approx_images is None or self.approx_images >= Y.shape[0]:
            return self._denoise_on(x, a, s, k, Y, gidx, mu, trace, cache=cls)
        # Approximate mode: each image meets only the patches of its approx_images nearest
        # training images, |x - a Y_n|, chosen afresh at every call (coarse to fine).
        outs, traces = [], []
        for b in range(x.shape[0]):
            d = ((x[b : b + 1] - a[b] * Y) ** 2).flatten(1).sum(1)
            near = torch.topk(d, self.approx_images, largest=False).indices.sort().values
            o, t = self._denoise_on(x[b : b + 1], a[b : b + 1], s[b : b + 1], k, Y[near], gidx[near.cpu()], mu, trace,
                                    cache=None)
            outs.append(o)
            traces.append(t)
        x0 = torch.cat(outs)
        if not trace:
            return x0, None
        return x0, Trace(*(torch.cat([getattr(t, f) for t in traces]) for f in
                           ("source_image", "source_pixel", "weight", "effective")))

    def _denoise_on(self, x, a, s, k, Y, gidx, mu, trace, cache):
        """Denoise x against the training images Y (global indices gidx); ``cache`` names the
        candidate set for the key cache (None: do not cache)."""
        if self.approx_radius is not None and not self._use_native(x):
            from .native import status

            raise InputError(f"approx_radius needs the compiled kernel and float32/float64 CPU tensors "
                             f"(kernel: {status()}; x: {x.dtype} on {x.device})")
        if self._use_native(x):
            return self._denoise_native(x, a, s, k, Y, gidx, trace, cache)
        return self._denoise_attention(x, a, s, k, Y, gidx, mu, trace, cache)

    def _denoise_native(self, x, a, s, k, Y, gidx, trace, cache):
        B, C, H, W = x.shape
        X, ox = displacement.pad_images(x, k, self.padding, extended=False)
        stream = displacement.DisplacementStream(
            X, ox, H, W, k, a, s, displacement.groups_for(self.name, self.padding, H, W, k, self.approx_radius),
            trace=trace,
        )
        per_image = C * (2 * H + 2 * k) * (2 * W + 2 * k) * x.element_size()  # an upper bound
        key = None if cache is None else ("native", self.padding, k, cache, x.dtype, x.device)
        padded_n = -(-Y.shape[0] // displacement.NB) * displacement.NB  # blocks are filled up to NB images
        whole = self._cached_keys(key, per_image * padded_n, lambda: displacement.candidate_blocks(Y, k, self.padding)[0])
        if whole is not None:
            stream.feed(whole, Y.shape[0], k // 2)
        else:
            per = max(displacement.NB, (self.memory_budget // 4) // per_image // displacement.NB * displacement.NB)
            for n0 in range(0, Y.shape[0], per):
                Yc = Y[n0 : n0 + per]
                stream.feed(displacement.candidate_blocks(Yc, k, self.padding)[0], Yc.shape[0], k // 2)
        res = stream.result()
        x0 = res.out.to(x.dtype)
        if not trace:
            return x0, None
        return x0, Trace(
            source_image=gidx[res.top_image],
            source_pixel=res.top_pixel,
            weight=res.top_weight,
            effective=res.entropy.exp(),
        )

    def _denoise_attention(self, x, a, s, k, Y, gidx, mu, trace, cache):
        B, C, H, W = x.shape
        h = k // 2
        Dp = C * k * k
        mu_vec = mu.repeat_interleave(k * k)  # [Dp], channel-major like the patches
        allpos = torch.arange(H * W, device=x.device)
        xp = gather_patches(x, k, self.padding, allpos) - a.view(-1, 1, 1) * mu_vec  # [B, HW, Dp]
        scale = (a / s**2).view(1, B, 1, 1)
        bias = (-(a**2) / (2 * s**2)).view(1, B, 1)
        x0 = x.new_empty(B, C, H * W)
        if trace:
            src_img = torch.empty(B, H * W, dtype=torch.long, device=x.device)
            src_pix = torch.empty(B, H * W, dtype=torch.long, device=x.device)
            weight = x.new_empty(B, H * W)
            eff = x.new_empty(B, H * W)
        for bi, pos_cpu in enumerate(self._layout(H, W, k)):
            pos = pos_cpu.to(x.device)
            G, P = pos.shape
            flat = pos.reshape(-1)
            q = x.new_empty(G, B, P, Dp + 1)
            q[..., :Dp] = xp[:, flat].view(B, G, P, Dp).permute(1, 0, 2, 3) * scale
            q[..., Dp] = bias
            cache_key = None if cache is None else (self.padding, k, H, W, bi, cache, x.dtype, x.device)
            res = attend(
                q.view(G, B * P, Dp + 1),
                self._key_chunks(Y, mu_vec, k, pos, cache_key),
                slice(h * k + h, Dp, k * k),  # centre pixel of every channel
                trace=trace,
                backend=self._attention_backend,
            )
            x0[:, :, flat] = res.out.view(G, B, P, C).permute(1, 3, 0, 2).reshape(B, C, G * P)
            if trace:
                top = res.top_index.view(G, B, P)
                n_local, p_local = top // P, top % P
                src_img[:, flat] = gidx.to(x.device)[n_local].permute(1, 0, 2).reshape(B, G * P)
                src = torch.gather(pos.unsqueeze(1).expand(G, B, P), 2, p_local)
                src_pix[:, flat] = src.permute(1, 0, 2).reshape(B, G * P)
                weight[:, flat] = res.top_weight.view(G, B, P).permute(1, 0, 2).reshape(B, G * P)
                eff[:, flat] = res.entropy.exp().view(G, B, P).permute(1, 0, 2).reshape(B, G * P)
        x0 = (x0 + mu.view(1, -1, 1)).view(B, C, H, W)
        if not trace:
            return x0, None
        return x0, Trace(
            source_image=src_img.view(B, H, W),
            source_pixel=src_pix.view(B, H, W),
            weight=weight.view(B, H, W),
            effective=eff.view(B, H, W),
        )

    def __repr__(self) -> str:
        C, H, W = self.image_shape
        return (
            f"{type(self).__name__}(N={self.images.shape[0]}, C={C}, H={H}, W={W}, "
            f"patch_size={self.patch_size}, padding={self.padding!r})"
        )


class LocalMachine(_PatchMachine):
    """LS, the local score machine: pixel q sees the patch at q of every training image.

    ``padding`` decides what a window past the border contains ("zeros" or "circular").
    """

    name = "ls"

    def _groups(self, H, W, k):
        return list(torch.arange(H * W).view(-1, 1))


class ELSMachine(_PatchMachine):
    """ELS, the equivariant local score machine.

    padding="circular": pixel q sees the patch at every pixel of every (periodically padded)
    training image. padding="zeros": the boundary-broken ELS of zero-padded networks; pixel q
    sees the patches at every pixel with q's padding footprint.
    """

    name = "els"

    def _groups(self, H, W, k):
        if self.padding == "circular":
            return [torch.arange(H * W)]
        return footprint_classes(H, W, k)


MACHINES = {"ideal": IdealMachine, "ls": LocalMachine, "els": ELSMachine}


def make_machine(
    name: str,
    images,
    *,
    padding: str = "zeros",
    patch_size: int | None = None,
    labels=None,
    schedule: CosineSchedule | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    backend: str = "auto",
    approx_images: int | None = None,
    approx_radius: int | None = None,
) -> ScoreMachine:
    """Build a machine by name: "ideal" (IS), "ls" (LS) or "els" (ELS; zeros = boundary-broken)."""
    if name not in MACHINES:
        raise InputError(f"unknown machine {name!r}; choose one of {', '.join(MACHINES)}")
    common = dict(labels=labels, schedule=schedule, memory_budget=memory_budget, backend=backend)
    if name == "ideal":
        if approx_images is not None or approx_radius is not None:
            raise InputError("approx_images and approx_radius apply to LS and ELS only")
        return IdealMachine(images, **common)
    return MACHINES[name](images, patch_size=patch_size, padding=padding, approx_images=approx_images,
                          approx_radius=approx_radius, **common)
