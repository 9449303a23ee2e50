"""LS and ELS, the local and equivariant local score machines (docs/theory.md, "The score
machines"; the paper's LS and ELS machines), on either engine form.

A pixel q is denoised from the candidate patches :mod:`.candidates` says it sees:

    LS   (n, q): the patch at q of every training image;
    ELS  circular: the patch at every pixel of every (periodic) training image;
         zeros (boundary-broken): the patches at every pixel with q's padding footprint.

The patch size belongs to the machine: one size, or a patch schedule looked up by t
(:mod:`elsmachine.patch_schedule`); ``denoise(..., patch_size=k)`` overrides it per call.

Attention form: dropping |P_q(x_t)|^2, the same for every candidate of a query, leaves
(a / s^2) q.y - (a^2 / (2 s^2)) |y|^2, queries [(a/s^2) q, -(a^2/(2 s^2))] against keys
[y, |y|^2], both sides shifted by the training mean first. Each class of pixels that see the
same candidate pixels is one group of the engine.
"""

from __future__ import annotations

import warnings

import torch

from .. import checks
from ..engines import attend
from ..engines import displacement as disp
from ..errors import InputError, RunError
from ..noise import NoiseSchedule
from ..patch_schedule import PatchSchedule, as_patch_schedule
from .base import DEFAULT_MEMORY_BUDGET, PatchSized, ScoreMachine, Trace, as_float
from .candidates import gather_patches, pixel_classes, rectangles

__all__ = ["PatchMachine", "LocalMachine", "ELSMachine"]


class PatchMachine(PatchSized, ScoreMachine):
    """Shared body of LS and ELS: patch sizes, the two engine forms, streamed candidates.

    Args (beyond :class:`ScoreMachine`'s):
        patch_size: one odd size, one per step of the default grid (highest t first), a preset
            name, a :class:`~elsmachine.PatchSchedule`, or a schedule file.
        padding: "zeros" or "circular".
        approx_images: (approximate) each noisy image meets only the patches of its
            ``approx_images`` nearest training images by |x_t - a Y_n|, chosen afresh per call.
        approx_radius: (approximate, ELS, compiled kernel) pixel q meets only the candidates at
            most this many pixels away along each axis (around the torus for circular); 0 is
            LS, a radius as large as the image is exact ELS.

    ``els bench`` reports the approximate modes' speed-up and fidelity to the exact machine.
    """

    def __init__(self, images, patch_size=None, padding: str = "zeros", *, labels=None,
                 schedule: NoiseSchedule | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 backend: str = "auto", approx_images: int | None = None, approx_radius: int | None = None,
                 distributed: bool = False) -> None:
        super().__init__(images, labels=labels, schedule=schedule, memory_budget=memory_budget, backend=backend,
                         distributed=distributed)
        if distributed and approx_images is not None:
            raise InputError("approx_images picks the nearest images of the whole set: not on a sharded machine")
        self.patch_size = as_patch_schedule(patch_size, schedule=self.schedule)
        self.padding = checks.padding(padding)
        if approx_images is not None:
            approx_images = checks.positive_int(approx_images, "approx_images")
        self.approx_images = approx_images
        if approx_radius is not None:
            if isinstance(approx_radius, bool) or not isinstance(approx_radius, int) or approx_radius < 0:
                raise InputError(f"approx_radius must be a non-negative integer or None, got {approx_radius!r}")
            if self.name != "els":
                raise InputError("approx_radius applies to ELS only (LS candidates sit at the query pixel already)")
            if backend not in ("auto", "native"):
                raise InputError(f"approx_radius needs the native backend, not backend={backend!r}")
        self.approx_radius = approx_radius
        self._triton_failed = False  # set when the Triton kernel failed here under backend="auto"

    def _checked_size(self, k: int) -> int:
        """Zero padding: a window of 2 max(H, W) - 1 already sees the whole image from every
        pixel, and a larger one only adds zeros to both sides of every distance, so it gives the
        same result; it is clamped there (with a warning) instead of costing its area."""
        H, W = self.image_shape[1:]
        cover = 2 * max(H, W) - 1
        if self.padding == "zeros" and k > cover:
            warnings.warn(f"patch size {k} is larger than a {H}x{W} image needs; using {cover}, which covers the "
                          f"image from every pixel and gives the same result", stacklevel=5)
            return cover
        return k

    def describe(self) -> dict:
        return {**super().describe(), "padding": self.padding, "approx_images": self.approx_images,
                "approx_radius": self.approx_radius}

    # ------------------------------------------------------------------ engine forms
    def _use_native(self, x) -> bool:
        if self.backend == "native" or self.approx_radius is not None:
            if not disp.available(x):
                from ..engines.native import status

                what = "approx_radius" if self.approx_radius is not None else "the native backend"
                raise InputError(f"{what} needs the compiled kernel and float32/float64 CPU tensors "
                                 f"(kernel: {status()}; x: {x.dtype} on {x.device})")
            return True
        return self.backend == "auto" and disp.available(x)

    def _denoise_subset(self, x, a, s, k, cls, trace, t=None):
        stored, gidx = self._raw(cls)
        exact = self.approx_images is None or self.approx_images >= stored.shape[0]
        if exact and not self._use_triton(x) and self._use_native(x):
            # The kernel streams the images as stored, converted one block at a time (a uint8
            # bank stays uint8; a float one is not copied).
            return self._denoise_native(x, a, s, k, stored, gidx, trace, cache=cls)
        Y, gidx, mu = self._training(x.dtype, x.device, cls)
        if exact:
            return self._denoise_on(x, a, s, k, Y, gidx, mu, trace, cache=cls)
        # Approximate mode: each image meets only the patches of its approx_images nearest
        # training images, |x - a Y_n|, chosen afresh at every call (coarse to fine).
        outs, traces = [], []
        for b in range(x.shape[0]):
            d = ((x[b : b + 1] - a[b] * Y) ** 2).flatten(1).sum(1)
            near = torch.topk(d, self.approx_images, largest=False).indices.sort().values
            o, t = self._denoise_on(x[b : b + 1], a[b : b + 1], s[b : b + 1], k, Y[near], gidx[near.cpu()], mu,
                                    trace, cache=None)
            outs.append(o)
            traces.append(t)
        x0 = torch.cat(outs)
        if not trace:
            return x0, None
        return x0, Trace(*(torch.cat([getattr(t, f) for t in traces]) for f in
                           ("source_image", "source_pixel", "weight", "effective", "patch_size")))

    def _denoise_on(self, x, a, s, k, Y, gidx, mu, trace, cache):
        """Denoise x against the training images Y (global indices gidx; the approximate mode's
        nearest images reach the kernel here); ``cache`` names the candidate set for the key
        cache (None: do not cache)."""
        if self._use_triton(x):
            try:
                return self._denoise_triton(x, a, s, k, Y, gidx, trace)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - Triton's compiler or driver, on this GPU
                if self.backend == "triton":
                    raise RunError(f"the Triton kernel failed on {x.device}: {type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}") from None
                # auto: say so once, then keep to the attention form on this machine
                warnings.warn(f"the Triton kernel failed on {x.device} ({type(e).__name__}); using the attention "
                              f"form instead", stacklevel=4)
                self._triton_failed = True
        if self._use_native(x):
            return self._denoise_native(x, a, s, k, Y, gidx, trace, cache)
        return self._denoise_attention(x, a, s, k, Y, gidx, mu, trace, cache)

    def _use_triton(self, x) -> bool:
        from ..engines import gpu

        if self.backend == "triton":
            why = gpu.why_unavailable(x)
            if why is not None:
                raise InputError(f"the triton backend cannot run here: {why}")
            return True
        # auto: the kernel for CUDA tensors where Triton is installed (the CPU has its own).
        return (self.backend == "auto" and x.device.type == "cuda" and gpu.available(x) and self.approx_radius is None
                and not self._triton_failed)

    def _denoise_triton(self, x, a, s, k, Y, gidx, trace):
        from ..engines.gpu import TritonStream

        B, C, H, W = x.shape
        HW = H * W
        classes = pixel_classes(self.name, self.padding, H, W, k, self.approx_radius)
        state = TritonStream(x, Y, a, s, k, self.padding, classes).state
        if trace:  # local image codes -> global ones (image * H * W + pixel)
            src = state.source.clamp_min(0)
            img = gidx.to(x.device)[src // HW] if Y.shape[0] else torch.zeros_like(src)
            state.source = img * HW + src % HW
        else:
            state.source = None
        self._combine(state)
        fin = state.finalize(torch.float64, trace=trace)
        x0 = fin.out.to(x.dtype)
        if not trace:
            return x0, None
        code = state.source
        return x0, Trace(source_image=code // HW, source_pixel=code % HW, weight=fin.weight.to(x.dtype),
                         effective=fin.effective.to(x.dtype), patch_size=torch.full((B,), k, dtype=torch.long))

    def _feed_native(self, stream, x, Y, k, cache) -> None:
        """Stream the training images Y (as stored) through the kernel's ``stream``, laid out
        for size k: all at once from the key cache where they fit, else in chunks."""
        C, H, W = x.shape[1:]
        nb = disp.native.block_size()
        per_image = C * (2 * H + 2 * k) * (2 * W + 2 * k) * x.element_size()  # an upper bound
        key = None if cache is None else ("native", self.padding, k, cache, x.dtype, x.device)
        padded_n = -(-Y.shape[0] // nb) * nb  # blocks are filled up to a whole block of images
        if not Y.shape[0]:  # a sharded machine's rank may hold no image of a class
            return
        whole = self._cached_keys(key, per_image * padded_n,
                                  lambda: disp.candidate_blocks(as_float(Y, x.dtype, x.device), k, self.padding)[0])
        if whole is not None:
            stream.feed(whole, Y.shape[0], k // 2)
            self._report(Y.shape[0], Y.shape[0])
            return
        per = max(nb, (self.memory_budget // 4) // per_image // nb * nb)
        for n0 in range(0, Y.shape[0], per):
            Yc = as_float(Y[n0 : n0 + per], x.dtype, x.device)  # uint8 banks: one block at a time
            stream.feed(disp.candidate_blocks(Yc, k, self.padding)[0], Yc.shape[0], k // 2)
            self._report(n0 + Yc.shape[0], Y.shape[0])

    def _denoise_native(self, x, a, s, k, Y, gidx, trace, cache):
        B, C, H, W = x.shape
        X, ox = disp.pad_images(x, k, self.padding, extended=False)
        groups = rectangles(self.name, self.padding, H, W, k, self.approx_radius)
        stream = disp.DisplacementStream(X, ox, H, W, k, a, s, groups, trace=trace)
        self._feed_native(stream, x, Y, k, cache)
        HW = H * W
        if trace:  # the best candidate as a global code: image * H * W + pixel
            img = gidx[stream.source_image] if Y.shape[0] else torch.zeros_like(stream.source_image)
            stream.state.source = img * HW + stream.source_pixel
        self._combine(stream.state)
        res = stream.result()
        x0 = res.out.to(x.dtype)
        if not trace:
            return x0, None
        code = stream.state.source
        return x0, Trace(source_image=code // HW, source_pixel=code % HW, weight=res.weight, effective=res.effective,
                         patch_size=torch.full((B,), k, dtype=torch.long))

    def _native_sizes(self, x, a, s, ks, Y, cache) -> list[torch.Tensor]:
        """x0_hat at each of the increasing sizes ``ks`` from one pass of the kernel over Y."""
        B, C, H, W = x.shape
        X, ox = disp.pad_images(x, ks[-1], self.padding, extended=False)
        groups = [rectangles(self.name, self.padding, H, W, k, self.approx_radius) for k in ks]
        stream = disp.DisplacementStream(X, ox, H, W, list(ks), a, s, groups)
        self._feed_native(stream, x, Y, ks[-1], cache)
        self._combine(stream.state)
        return list(stream.result().out.to(x.dtype).view(len(ks), B, C, H, W))

    def denoise_sizes(self, x: torch.Tensor, t, sizes, labels=None) -> list[torch.Tensor]:
        """x0_hat at each patch size of ``sizes`` (in that order): ``denoise(x, t, labels,
        patch_size=k)`` for each k, to rounding, from one pass over the candidates where the
        compiled kernel runs (docs/theory.md, "Patch schedules"); elsewhere size by size."""
        if isinstance(sizes, (int, str, torch.Tensor)) or not hasattr(sizes, "__iter__"):
            raise InputError(f"sizes must be a list of odd patch sizes, got {sizes!r}")
        ks = [self._checked_size(checks.patch_size(k, "patch sizes")) for k in sizes]
        if not ks:
            raise InputError("give at least one patch size")
        x = checks.query(x, self.image_shape)
        if len(set(ks)) == 1 or self.approx_images is not None or self._use_triton(x) or not self._use_native(x):
            return [self.denoise(x, t, labels, patch_size=k) for k in ks]
        B = x.shape[0]
        tt = checks.times(t, B)
        a, s = self.schedule.coefficients(tt, x)
        uniq = sorted(set(ks))
        outs = {k: torch.empty_like(x) for k in uniq}
        most = disp.native.max_sizes()
        for bidx, cls, _ in self._subsets(labels, [None] * B, B):
            sel = bidx.to(x.device)
            stored, _ = self._raw(cls)
            for j0 in range(0, len(uniq), most):
                part = uniq[j0 : j0 + most]
                for k, o in zip(part, self._native_sizes(x[sel], a[sel], s[sel], part, stored, cls)):
                    outs[k][sel] = o
        return [outs[k] for k in ks]

    def _layout(self, H: int, W: int, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The pixel classes, stacked into blocks (queries [G, Q], candidates [G, P]) of classes
        with the same numbers of query and candidate pixels, largest first."""
        by_size: dict[tuple[int, int], list] = {}
        for qs, ps in pixel_classes(self.name, self.padding, H, W, k, self.approx_radius):
            by_size.setdefault((qs.numel(), ps.numel()), []).append((qs, ps))
        return [(torch.stack([q for q, _ in cl]), torch.stack([p for _, p in cl]))
                for _, cl in sorted(by_size.items(), reverse=True)]

    def _block_keys(self, Y, mu_vec, k, cand):
        """Keys [G, n * P, C*k*k + 1] of the images Y [n, C, H, W] at the candidate pixels
        cand [G, P]; candidate j of group g is image j // P at pixel cand[g, j % P]."""
        G, P = cand.shape
        n = Y.shape[0]
        Dp = mu_vec.numel()
        p = gather_patches(Y, k, self.padding, cand.reshape(-1)) - mu_vec  # [n, G*P, Dp]
        keys = Y.new_empty(G, n, P, Dp + 1)
        keys[..., :Dp] = p.view(n, G, P, Dp).permute(1, 0, 2, 3)
        keys[..., Dp] = (p * p).sum(-1).view(n, G, P).permute(1, 0, 2)
        return keys.view(G, n * P, Dp + 1)

    def _key_chunks(self, Y, mu_vec, k, cand, cache_key):
        G, P = cand.shape
        per_image = G * P * (mu_vec.numel() + 1) * Y.element_size()
        keys = self._cached_keys(cache_key, per_image * Y.shape[0], lambda: self._block_keys(Y, mu_vec, k, cand))
        if keys is not None:
            yield keys
            return
        per = max(1, (self.memory_budget // 4) // per_image)
        for n0 in range(0, Y.shape[0], per):
            yield self._block_keys(Y[n0 : n0 + per], mu_vec, k, cand)

    def _denoise_attention(self, x, a, s, k, Y, gidx, mu, trace, cache):
        B, C, H, W = x.shape
        h = k // 2
        Dp = C * k * k
        mu_vec = mu.repeat_interleave(k * k)  # [Dp], channel-major like the patches
        xp = gather_patches(x, k, self.padding, torch.arange(H * W)) - a.view(-1, 1, 1) * mu_vec  # [B, HW, Dp]
        scale = (a / s**2).view(1, B, 1, 1)
        bias = (-(a**2) / (2 * s**2)).view(1, B, 1)
        x0 = x.new_empty(B, C, H * W)
        tr = Trace.empty(B, H * W, 1, x) if trace else None
        for bi, (qpos_cpu, cpos_cpu) in enumerate(self._layout(H, W, k)):
            qpos, cpos = qpos_cpu.to(x.device), cpos_cpu.to(x.device)
            G, Q = qpos.shape
            P = cpos.shape[1]
            flat = qpos.reshape(-1)
            q = x.new_empty(G, B, Q, Dp + 1)
            q[..., :Dp] = xp[:, flat].view(B, G, Q, Dp).permute(1, 0, 2, 3) * scale
            q[..., Dp] = bias
            cache_key = None if cache is None else (self.padding, k, H, W, bi, cache, x.dtype, x.device)

            def combine(state, P=P, cpos=cpos):  # stream positions -> global codes, then every rank's
                if state.source is not None:
                    n_local, p_local = state.source // P, state.source % P
                    img = gidx.to(x.device)[n_local] if Y.shape[0] else torch.zeros_like(n_local)
                    state.source = img * (H * W) + torch.gather(cpos, 1, p_local)
                self._combine(state)

            res = attend(q.view(G, B * Q, Dp + 1), self._key_chunks(Y, mu_vec, k, cpos, cache_key),
                         slice(h * k + h, Dp, k * k),  # the centre pixel of every channel
                         trace=trace, backend=self._attention_backend, combine=combine, allow_empty=self.distributed)
            x0[:, :, flat] = res.out.view(G, B, Q, C).permute(1, 3, 0, 2).reshape(B, C, G * Q)
            if trace:
                def per_pixel(v, G=G, Q=Q):  # [G, B * Q] -> [B, G * Q]
                    return v.view(G, B, Q).permute(1, 0, 2).reshape(B, G * Q)

                tr.source_image[:, flat, 0] = per_pixel(res.source // (H * W))
                tr.source_pixel[:, flat, 0] = per_pixel(res.source % (H * W))
                tr.weight[:, flat, 0] = per_pixel(res.weight)
                tr.effective[:, flat, 0] = per_pixel(res.effective)
        x0 = (x0 + mu.view(1, -1, 1)).view(B, C, H, W)
        if not trace:
            return x0, None
        return x0, Trace(*(getattr(tr, f).view(B, H, W) for f in ("source_image", "source_pixel", "weight", "effective")),
                         patch_size=torch.full((B,), k, dtype=torch.long))

    def __repr__(self) -> str:
        C, H, W = self.image_shape
        ps = self.patch_size
        k = f"a patch schedule of {len(ps.sizes)} steps" if isinstance(ps, PatchSchedule) else ps
        return (f"{type(self).__name__}(N={self.images.shape[0]}, C={C}, H={H}, W={W}, patch_size={k}, "
                f"padding={self.padding!r})")


class LocalMachine(PatchMachine):
    """LS, the local score machine: pixel q sees the patch at q of every training image.
    ``padding`` decides what a window past the border contains ("zeros" or "circular")."""

    name = "ls"


class ELSMachine(PatchMachine):
    """ELS, the equivariant local score machine.

    padding="circular": pixel q sees the patch at every pixel of every (periodically padded)
    training image. padding="zeros": the boundary-broken ELS of zero-padded networks; pixel q
    sees the patches at every pixel with q's padding footprint.
    """

    name = "els"
