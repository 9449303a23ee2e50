"""Build and load the compiled displacement kernel (``engines/csrc/displacement.c``).

The kernel is compiled on first use with the system C compiler (``$CC``, else ``cc``) into a
per-user cache (``$ELSMACHINE_CACHE``, else ``~/.cache/elsmachine``), keyed by the source, the
flags and the compiler, and loaded with ctypes. Where no compiler works, :func:`library`
returns None and the machines use the attention engine instead; :func:`status` says why.
Set ``ELSMACHINE_NATIVE=0`` to switch the kernel off.

The kernel takes its arguments as one struct, ``els_args``, declared once in the C source;
:func:`args_type` builds the matching ctypes structure by reading that declaration.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

__all__ = ["library", "status", "args_type", "block_size", "max_sizes"]

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]
_lock = threading.Lock()
_lib = None
_status = "not loaded yet"
_args = None  # the ctypes mirror of els_args, built once


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


_C_TYPES = {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "double": ctypes.c_double}


def _source() -> bytes:
    return (resources.files("elsmachine") / "engines" / "csrc" / "displacement.c").read_bytes()


def args_type() -> type:
    """The ctypes mirror of ``els_args``, read from its declaration in the C source: one field
    a line, ``[const] TYPE [*]NAME;``. Pointers of any type are passed as addresses."""
    global _args
    if _args is None:
        src = _source().decode()
        body = re.search(r"typedef struct \{(.*?)\} els_args;", src, re.S)
        if body is None:
            raise RuntimeError("displacement.c declares no els_args struct")
        fields = []
        for line in body.group(1).splitlines():
            code = line.split("/*")[0].strip()
            if not code:
                continue
            m = re.fullmatch(r"(?:const\s+)?(\w+)\s*(\*?)\s*(\w+);", code)
            if m is None or (not m.group(2) and m.group(1) not in _C_TYPES):
                raise RuntimeError(f"cannot read the els_args field {code!r}")
            fields.append((m.group(3), ctypes.c_void_p if m.group(2) else _C_TYPES[m.group(1)]))
        _args = type("ElsArgs", (ctypes.Structure,), {"_fields_": fields})
    return _args


def _build() -> ctypes.CDLL:
    src = _source()
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
    for fn in (lib.els_stream_f32, lib.els_stream_f64, lib.els_stream_sizes_f32, lib.els_stream_sizes_f64):
        fn.argtypes = [ctypes.POINTER(args_type())]
        fn.restype = ctypes.c_int
    lib.els_block_size.restype = ctypes.c_int
    lib.els_max_sizes.restype = ctypes.c_int
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


def block_size() -> int:
    """Training images per lane block of the kernel (its NB)."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"the displacement kernel is not in use: {status()}")
    return int(lib.els_block_size())


def max_sizes() -> int:
    """Patch sizes one call of the kernel's several-sizes entry takes at most."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"the displacement kernel is not in use: {status()}")
    return int(lib.els_max_sizes())
