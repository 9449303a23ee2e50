"""The engine forms for patch candidates (docs/theory.md, "How it computes" and "The computation is
attention"): each implements :class:`~elsmachine.engines.engine.Engine` for the candidates
:mod:`.candidates` says a pixel sees, and returns one softmax state over the output pixels,
[B, H, W] with the C values on dimension 1, whose best-candidate codes are global
(image * H * W + pixel).

- :class:`AttentionForm`: queries against patch keys by matrix products (any device). Dropping
  |P_q(x_t)|^2, the same for every candidate of a query, leaves (a / s^2) q.y - (a^2 / (2 s^2))
  |y|^2: queries [(a/s^2) q, -(a^2/(2 s^2))] against keys [y, |y|^2], both sides shifted by the
  training mean first. Each class of pixels that see the same candidate pixels is one group.
- :class:`DisplacementForm`: the compiled CPU kernel, distances per displacement straight from
  the images; several patch sizes in one pass (:meth:`DisplacementForm.stream_sizes`).
- :class:`TritonForm`: the GPU kernel, distances in direct form.
- :class:`TritonDisplacementForm`: the GPU kernel in the displacement form; several patch sizes
  in one pass.
- :class:`TritonChoice`: both GPU kernels, the faster kept per patch size, timed on a slice of
  the bank at first use.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from ..engines import displacement as disp
from ..engines.attention import attention_state
from ..engines.engine import Bank, KeyCache, as_float
from ..engines.softmax import SoftmaxState
from ..errors import InputError
from .candidates import gather_patches, pixel_classes, rectangles

__all__ = ["PatchQueries", "Geometry", "AttentionForm", "DisplacementForm", "TritonForm", "TritonDisplacementForm",
           "TritonChoice"]


@dataclass
class PatchQueries:
    """Noisy images x [B, C, H, W] with their coefficients a, s [B] (x's dtype), at patch size k
    (an int; for :meth:`DisplacementForm.stream_sizes`, a list of increasing sizes).

    ``window`` (attention form only): weights w [k, k] of the squared differences in a patch
    distance, sum_o w(o) |x(q + o) - a Y(p + o)|^2, with w = 1 at the centre; None is the box.
    ``centring`` (attention form only): the share c of each channel's patch mean taken out of
    both patches before the distance (0: none); the values stay the candidates' centre pixels."""

    x: torch.Tensor
    a: torch.Tensor
    s: torch.Tensor
    k: int | list[int]
    window: torch.Tensor | None = None
    centring: float = 0.0

    @property
    def device(self) -> torch.device:
        return self.x.device


@dataclass(frozen=True)
class Geometry:
    """Which candidates a pixel sees: ``kind`` "ls" or "els", ``padding``, and ELS's optional
    ``radius`` (:mod:`.candidates`)."""

    kind: str
    padding: str
    radius: int | None = None

    def rectangles(self, H: int, W: int, k: int) -> torch.Tensor:
        return rectangles(self.kind, self.padding, H, W, k, self.radius)

    def pixel_classes(self, H: int, W: int, k: int):
        return pixel_classes(self.kind, self.padding, H, W, k, self.radius)


def _global_codes(local_image: torch.Tensor, pixel: torch.Tensor, bank: Bank, HW: int) -> torch.Tensor:
    """image * H * W + pixel with the image counted in the machine's full set (a rank holding no
    image of a class has no code to give: its state is empty and loses every merge)."""
    img = bank.index.to(local_image.device)[local_image] if len(bank) else torch.zeros_like(local_image)
    return img * HW + pixel


def _box_only(queries: PatchQueries, form: str) -> None:
    if queries.window is not None or queries.centring:  # these kernels sum a box; it would be silently dropped
        raise ValueError(f"the {form} form computes box distances only; a windowed or centred distance needs the "
                         f"attention form")


def _centred(p: torch.Tensor, c: float, C: int) -> torch.Tensor:
    """Patches p [..., C k k] (channel-major) less the share c of each channel's mean."""
    shape = p.shape
    q = p.reshape(*shape[:-1], C, -1)
    return (q - c * q.mean(-1, keepdim=True)).reshape(shape)


class AttentionForm:
    """Patch candidates by matrix products; keys cached within the machine's budget."""

    def __init__(self, geometry: Geometry, cache: KeyCache, memory_budget: int, backend: str = "auto") -> None:
        self.geometry, self.cache, self.memory_budget, self.backend = geometry, cache, memory_budget, backend
        self.name = "attention"
        self.several_sizes = False

    def _layout(self, H: int, W: int, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The pixel classes, stacked into blocks (queries [G, Q], candidates [G, P]) of classes
        with the same numbers of query and candidate pixels, largest first."""
        by_size: dict[tuple[int, int], list] = {}
        for qs, ps in self.geometry.pixel_classes(H, W, k):
            by_size.setdefault((qs.numel(), ps.numel()), []).append((qs, ps))
        return [(torch.stack([q for q, _ in cl]), torch.stack([p for _, p in cl]))
                for _, cl in sorted(by_size.items(), reverse=True)]

    def _block_keys(self, Y, mu_vec, k, cand, root_w, centring=0.0):
        """Keys [G, n * P, C*k*k + 1] of the images Y [n, C, H, W] at the candidate pixels
        cand [G, P]; candidate j of group g is image j // P at pixel cand[g, j % P]. A window
        scales both sides by sqrt(w) (``root_w`` [C*k*k] or None), which leaves the centre
        pixels, the values, as they are (w = 1 there). Centring changes the centre pixels too, so
        the values then follow as C more columns, [C*k*k + 1 + C] in all."""
        G, P = cand.shape
        n = Y.shape[0]
        Dp = mu_vec.numel()
        C = Y.shape[1]
        p = gather_patches(Y, k, self.geometry.padding, cand.reshape(-1)) - mu_vec  # [n, G*P, Dp]
        extra = C if centring else 0
        keys = Y.new_empty(G, n, P, Dp + 1 + extra)
        if centring:
            h = k // 2
            keys[..., Dp + 1 :] = p[..., h * k + h :: k * k].reshape(n, G, P, C).permute(1, 0, 2, 3)
            p = _centred(p, centring, C)
        if root_w is not None:
            p = p * root_w
        keys[..., :Dp] = p.view(n, G, P, Dp).permute(1, 0, 2, 3)
        keys[..., Dp] = (p * p).sum(-1).view(n, G, P).permute(1, 0, 2)
        return keys.view(G, n * P, Dp + 1 + extra)

    def _key_chunks(self, Y, mu_vec, k, cand, cache_key, root_w, centring=0.0):
        G, P = cand.shape
        width = mu_vec.numel() + 1 + (Y.shape[1] if centring else 0)
        per_image = G * P * width * Y.element_size()
        keys = self.cache.get(cache_key, per_image * Y.shape[0],
                              lambda: self._block_keys(Y, mu_vec, k, cand, root_w, centring))
        if keys is not None:
            yield keys
            return
        per = max(1, (self.memory_budget // 4) // per_image)
        for n0 in range(0, Y.shape[0], per):
            yield self._block_keys(Y[n0 : n0 + per], mu_vec, k, cand, root_w, centring)

    def stream(self, queries: PatchQueries, bank: Bank, *, trace: bool) -> SoftmaxState:
        x, a, s, k = queries.x, queries.a, queries.s, queries.k
        B, C, H, W = x.shape
        HW = H * W
        h = k // 2
        Dp = C * k * k
        Y = bank.as_float(x.dtype, x.device)
        mu = bank.mean.to(device=x.device, dtype=x.dtype)
        mu_vec = mu.repeat_interleave(k * k)  # [Dp], channel-major like the patches
        xp = gather_patches(x, k, self.geometry.padding, torch.arange(HW)) - a.view(-1, 1, 1) * mu_vec  # [B, HW, Dp]
        c = float(queries.centring)
        extra = C if c else 0
        if c:
            xp = _centred(xp, c, C)
        root_w, window_key = None, None
        if queries.window is not None:
            w = queries.window.detach().to("cpu", torch.float64)
            if w.shape != (k, k) or float(w[h, h]) != 1.0:
                raise ValueError(f"a window must be [{k}, {k}] with 1 at its centre, got {tuple(w.shape)}")
            window_key = w.numpy().tobytes()
            root_w = w.sqrt().flatten().repeat(C).to(device=x.device, dtype=x.dtype)
            xp = xp * root_w
        scale = (a / s**2).view(1, B, 1, 1)
        bias = (-(a**2) / (2 * s**2)).view(1, B, 1)
        out = SoftmaxState.empty((B, HW), C, value_dim=1, device=x.device, trace=trace)
        for bi, (qpos_cpu, cpos_cpu) in enumerate(self._layout(H, W, k)):
            qpos, cpos = qpos_cpu.to(x.device), cpos_cpu.to(x.device)
            G, Q = qpos.shape
            P = cpos.shape[1]
            flat = qpos.reshape(-1)
            q = x.new_empty(G, B, Q, Dp + 1 + extra)
            q[..., :Dp] = xp[:, flat].view(B, G, Q, Dp).permute(1, 0, 2, 3) * scale
            q[..., Dp] = bias
            if extra:
                q[..., Dp + 1 :] = 0  # the value columns take no part in the logits
            cache_key = None if bank.key is None else (self.geometry, k, H, W, bi, bank.key, x.dtype, x.device,
                                                       window_key, *((c,) if c else ()))
            values = slice(Dp + 1, Dp + 1 + C) if extra else slice(h * k + h, Dp, k * k)  # the centre pixels
            st = attention_state(q.view(G, B * Q, Dp + 1 + extra),
                                 self._key_chunks(Y, mu_vec, k, cpos, cache_key, root_w, c), values,
                                 trace=trace, backend=self.backend)

            def per_pixel(v, G=G, Q=Q):  # [G, B * Q] -> [B, G * Q]
                return v.view(G, B, Q).permute(1, 0, 2).reshape(B, G * Q)

            for f in ("m", "l", "u", "best"):
                getattr(out, f)[:, flat] = per_pixel(getattr(st, f))
            out.acc[:, :, flat] = st.acc.view(G, B, Q, C).permute(1, 3, 0, 2).reshape(B, C, G * Q)
            if trace:  # stream positions -> global codes
                n_local, p_local = st.source // P, st.source % P
                out.source[:, flat] = per_pixel(_global_codes(n_local, torch.gather(cpos, 1, p_local), bank, HW))
        return SoftmaxState(m=out.m.view(B, H, W), l=out.l.view(B, H, W), acc=out.acc.view(B, C, H, W),
                            u=out.u.view(B, H, W), best=out.best.view(B, H, W), value_dim=1,
                            source=None if out.source is None else out.source.view(B, H, W), shift=mu)


class DisplacementForm:
    """The compiled CPU kernel; the images it streams laid out once per size where they fit the
    key cache, else converted and laid out chunk by chunk."""

    name = "native"
    several_sizes = True

    @property
    def max_sizes(self) -> int:
        return disp.native.max_sizes()

    def __init__(self, geometry: Geometry, cache: KeyCache, memory_budget: int) -> None:
        self.geometry, self.cache, self.memory_budget = geometry, cache, memory_budget

    def _feed(self, stream, x, bank: Bank, k: int) -> None:
        """Stream the bank's images (as stored) through the kernel's ``stream``, laid out for size k."""
        Y = bank.images
        C, H, W = x.shape[1:]
        padding = self.geometry.padding
        nb = disp.native.block_size()
        per_image = C * (2 * H + 2 * k) * (2 * W + 2 * k) * x.element_size()  # an upper bound
        key = None if bank.key is None else ("native", padding, k, bank.key, x.dtype, x.device)
        padded_n = -(-Y.shape[0] // nb) * nb  # blocks are filled up to a whole block of images
        if not Y.shape[0]:  # a sharded machine's rank may hold no image of a class
            return
        whole = self.cache.get(key, per_image * padded_n,
                               lambda: disp.candidate_blocks(as_float(Y, x.dtype, x.device), k, padding)[0])
        if whole is not None:
            stream.feed(whole, Y.shape[0], k // 2)
            bank.report(Y.shape[0], Y.shape[0])
            return
        per = max(nb, (self.memory_budget // 4) // per_image // nb * nb)
        for n0 in range(0, Y.shape[0], per):
            Yc = as_float(Y[n0 : n0 + per], x.dtype, x.device)  # uint8 banks: one block at a time
            stream.feed(disp.candidate_blocks(Yc, k, padding)[0], Yc.shape[0], k // 2)
            bank.report(n0 + Yc.shape[0], Y.shape[0])

    def stream(self, queries: PatchQueries, bank: Bank, *, trace: bool) -> SoftmaxState:
        _box_only(queries, self.name)
        x, k = queries.x, queries.k
        H, W = x.shape[2:]
        X, ox = disp.pad_images(x, k, self.geometry.padding, extended=False)
        st = disp.DisplacementStream(X, ox, H, W, k, queries.a, queries.s, self.geometry.rectangles(H, W, k),
                                     trace=trace)
        self._feed(st, x, bank, k)
        if trace:
            st.state.source = _global_codes(st.source_image, st.source_pixel, bank, H * W)
        return st.state

    def stream_sizes(self, queries: PatchQueries, bank: Bank) -> SoftmaxState:
        """The states of every size of the increasing list ``queries.k`` from one pass over the
        bank, stacked: [len(k) * B, H, W] (size j at rows j * B .. j * B + B - 1); no trace."""
        _box_only(queries, self.name)
        x, ks = queries.x, list(queries.k)
        H, W = x.shape[2:]
        X, ox = disp.pad_images(x, ks[-1], self.geometry.padding, extended=False)
        st = disp.DisplacementStream(X, ox, H, W, ks, queries.a, queries.s,
                                     [self.geometry.rectangles(H, W, k) for k in ks])
        self._feed(st, x, bank, ks[-1])
        return st.state


class TritonForm:
    """The Triton kernel (:mod:`elsmachine.engines.gpu`)."""

    name = "Triton"
    several_sizes = False

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry

    def stream(self, queries: PatchQueries, bank: Bank, *, trace: bool) -> SoftmaxState:
        from ..engines.gpu import TritonStream

        _box_only(queries, self.name)
        x, k = queries.x, queries.k
        H, W = x.shape[2:]
        HW = H * W
        Y = bank.as_float(x.dtype, x.device)
        state = TritonStream(x, Y, queries.a, queries.s, k, self.geometry.padding,
                             self.geometry.pixel_classes(H, W, k)).state
        if trace:  # local image codes -> global ones
            src = state.source.clamp_min(0)
            state.source = _global_codes(src // HW, src % HW, bank, HW)
        else:
            state.source = None
        return state


class TritonDisplacementForm:
    """The Triton kernel in the displacement form (:mod:`elsmachine.engines.gpu_displacement`):
    window sums of squared-difference images, several patch sizes in one pass."""

    name = "Triton displacement"
    several_sizes = True

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry

    @property
    def max_sizes(self) -> int:
        from ..engines.gpu_displacement import MAX_SIZES

        return MAX_SIZES

    def _state(self, queries: PatchQueries, bank: Bank, ks, trace: bool) -> SoftmaxState:
        from ..engines.gpu_displacement import TritonDisplacementStream

        _box_only(queries, self.name)
        x = queries.x
        H, W = x.shape[2:]
        sizes = [ks] if isinstance(ks, int) else list(ks)
        return TritonDisplacementStream(x, bank.as_float(x.dtype, x.device), queries.a, queries.s, ks,
                                        self.geometry.padding, [self.geometry.rectangles(H, W, k) for k in sizes],
                                        trace=trace).state

    def stream(self, queries: PatchQueries, bank: Bank, *, trace: bool) -> SoftmaxState:
        state = self._state(queries, bank, queries.k, trace)
        if trace:  # local image codes -> global ones
            HW = queries.x.shape[2] * queries.x.shape[3]
            src = state.source.clamp_min(0)
            state.source = _global_codes(src // HW, src % HW, bank, HW)
        return state

    def stream_sizes(self, queries: PatchQueries, bank: Bank) -> SoftmaxState:
        """The states of every size of the increasing list ``queries.k`` from one pass over the
        bank, stacked: [len(k) * B, H, W] (size j at rows j * B .. j * B + B - 1); no trace."""
        return self._state(queries, bank, list(queries.k), False)


# The Triton form kept for each (device, dtype, machine kind, padding, C, H, W, patch size) in
# this process, with the times that chose it.
_TRITON_CHOICES: dict = {}


class TritonChoice:
    """Both Triton forms, the faster kept per patch size. At the first call with a size (per
    device, dtype, padding and image shape, for the whole process), each form streams the same
    queries against a slice of the bank (its first ``probe`` images): once to compile, then twice
    timed; the one with the shorter best time is kept. A form that fails there is left out with a
    warning (both failing: the error passes on, to :class:`~elsmachine.engines.engine.Fallback`).
    Several sizes in one pass go to the displacement form. :meth:`report` states the choices and
    the measured times."""

    several_sizes = True

    def __init__(self, geometry: Geometry, probe: int = 256) -> None:
        self.geometry, self.probe = geometry, probe
        self.forms = {"direct": TritonForm(geometry), "displacement": TritonDisplacementForm(geometry)}
        self.chosen: dict[int, dict] = {}  # patch size -> the record this engine ran it by

    @property
    def name(self) -> str:
        forms = {r["form"] for r in self.chosen.values()}
        if len(forms) == 1:
            return self.forms[forms.pop()].name
        return "Triton" if not forms else "Triton, by size"

    @property
    def max_sizes(self) -> int:
        return self.forms["displacement"].max_sizes

    def _key(self, x: torch.Tensor, k: int) -> tuple:
        return (str(x.device), x.dtype, self.geometry.kind, self.geometry.padding, *x.shape[1:], k)

    def _pick(self, queries: PatchQueries, bank: Bank, trace: bool):
        if not len(bank):  # nothing to time (a rank of a sharded bank without this class)
            return self.forms["direct"]
        key = self._key(queries.x, queries.k)
        record = _TRITON_CHOICES.get(key)
        if record is None:
            n = min(len(bank), self.probe)
            part = Bank(bank.images[:n], bank.index[:n], bank.mean)
            seconds, errors = {}, {}
            for name, form in self.forms.items():
                try:
                    seconds[name] = _best_time(form, queries, part, trace)
                except InputError:
                    raise
                except Exception as e:  # noqa: BLE001 - this form's compiler or driver, on this device
                    errors[name] = e
            if not seconds:
                raise errors["direct"]
            for name, e in errors.items():
                warnings.warn(f"the {self.forms[name].name} kernel failed on {queries.x.device} ({type(e).__name__}); "
                              f"using the other Triton form", stacklevel=5)
            record = {"form": min(seconds, key=seconds.get), "seconds": seconds, "probe_images": n,
                      "failed": {name: type(e).__name__ for name, e in errors.items()}}
            _TRITON_CHOICES[key] = record
        self.chosen[queries.k] = record
        return self.forms[record["form"]]

    def stream(self, queries: PatchQueries, bank: Bank, *, trace: bool) -> SoftmaxState:
        return self._pick(queries, bank, trace).stream(queries, bank, trace=trace)

    def stream_sizes(self, queries: PatchQueries, bank: Bank) -> SoftmaxState:
        return self.forms["displacement"].stream_sizes(queries, bank)

    def report(self) -> dict:
        """Per patch size used so far: the form kept, each form's best time (seconds) on the slice
        of the bank, the slice's number of images and the forms that failed there."""
        return {"triton": {str(k): dict(r) for k, r in sorted(self.chosen.items())}} if self.chosen else {}


def _best_time(form, queries: PatchQueries, bank: Bank, trace: bool) -> float:
    """The shorter of two timed streams of ``bank`` through ``form``, after one that compiles."""
    dev = queries.x.device

    def sync() -> None:  # GPU work is asynchronous: time it to its end
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    form.stream(queries, bank, trace=trace)
    sync()
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        form.stream(queries, bank, trace=trace)
        sync()
        best = min(best, time.perf_counter() - t0)
    return best
