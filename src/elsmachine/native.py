"""Build and load the compiled displacement kernel (``csrc/displacement.c``).

The kernel is compiled on first use with the system C compiler (``$CC``, else ``cc``) into a
per-user cache (``$ELSMACHINE_CACHE``, else ``~/.cache/elsmachine``), keyed by the source, the
flags and the compiler, and loaded with ctypes. Where no compiler works, :func:`library`
returns None and the machines use the attention engine instead; :func:`status` says why.
Set ``ELSMACHINE_NATIVE=0`` to switch the kernel off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

__all__ = ["library", "status"]

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]
_lock = threading.Lock()
_lib = None
_status = "not loaded yet"


def _cache_dir() -> Path:
    root = os.environ.get("ELSMACHINE_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elsmachine"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _signature(fn, real):
    p_real = ctypes.POINTER(real)
    p_i64 = ctypes.POINTER(ctypes.c_int64)
    p_int = ctypes.POINTER(ctypes.c_int)
    i = ctypes.c_int
    p_acc = ctypes.POINTER(ctypes.c_double)
    fn.argtypes = [p_real, i, i, i, i, p_real, i, i, i, i, i, i, p_real, p_real, p_int, i, i, i,
                   p_acc, p_acc, p_acc, p_acc, p_acc, p_i64, p_i64, ctypes.c_int64, i]
    fn.restype = ctypes.c_int


def _build() -> ctypes.CDLL:
    src = (resources.files("elsmachine") / "csrc" / "displacement.c").read_bytes()
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"C compiler {cc!r} does not run: {e}") from None
    key = hashlib.sha256(src + " ".join(_FLAGS).encode() + version.encode() + platform.machine().encode()
                         + platform.node().encode()).hexdigest()[:16]
    out = _cache_dir() / f"displacement-{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            c = Path(tmp) / "displacement.c"
            c.write_bytes(src)
            objs = []
            for name, extra in (("f32.o", []), ("f64.o", ["-DELS_DOUBLE"])):
                o = Path(tmp) / name
                _run([cc, *_FLAGS, *extra, "-c", str(c), "-o", str(o)])
                objs.append(str(o))
            so = Path(tmp) / "lib.so"
            _run([cc, "-shared", "-fopenmp", *objs, "-o", str(so)])
            os.replace(so, out)
    lib = ctypes.CDLL(str(out))
    _signature(lib.els_stream_f32, ctypes.c_float)
    _signature(lib.els_stream_f64, ctypes.c_double)
    return lib


def _run(cmd: list[str]) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"{' '.join(cmd)} failed: {e}") from None
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr.strip()[-2000:]}")


def library():
    """The loaded kernel library, or None where it cannot be built here."""
    global _lib, _status
    if _lib is not None:
        return _lib
    if os.environ.get("ELSMACHINE_NATIVE", "1") == "0":
        _status = "switched off by ELSMACHINE_NATIVE=0"
        return None
    with _lock:
        if _lib is None and _status == "not loaded yet":
            try:
                _lib = _build()
                _status = "loaded"
            except Exception as e:  # noqa: BLE001 - any build failure means: use the fallback
                _status = f"unavailable: {e}"
    return _lib


def status() -> str:
    """'loaded', or why the compiled kernel is not in use."""
    library()
    return _status
