"""Native CPU fast path for the training loss and its gradients, K networks at once.

Same contract as the autograd path in `trainers.training.loss_and_grads`:

    loss_and_grads(kind, params, x (K, B, T, I), y (K, B, T-1), trainable)
        -> (loss (K,), {name: grad like params[name] for name in trainable})

with prediction head(h[t]) for y[:, :, t], t = 0..T-2, and per member the mean over
B x (T-1) of 0.5 * ((y - yhat)^2 / sigma^2 + log(2 pi sigma^2)), sigma = 0.05 (SCIENCE.md §2).

Why: at H <= 32 a PyTorch time step is dominated by per-op dispatch and scalar tanh/sigmoid,
so the whole time loop, forward and BPTT, runs in `_fastpath.cpp`: batch in SIMD lanes, one
thread per (member, batch chunk). A member's numbers do not depend on its batch-mates.

The C++ file has no torch headers: it is compiled on first use with the system C++
compiler (a few seconds), cached per user under $WORLDSWEEP_CACHE_DIR (default
$XDG_CACHE_HOME/worldsweep or ~/.cache/worldsweep) keyed by source, compiler and CPU, and
called through ctypes (which releases the GIL). This is the one place in trainers/ that
touches disk, and only its own build cache. Without a compiler, `available` returns False
(logged once) and callers keep the autograd path; so do CUDA tensors and
WORLDSWEEP_FASTPATH=0.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from trainers import cells

log = logging.getLogger(__name__)

SIGMA = 0.05  # fixed observation noise of the Gaussian NLL (SCIENCE.md §2)
KIND_CODES = {"rnn_tanh": 0, "gru": 1, "lstm": 2}  # must match enum Kind in _fastpath.cpp
PARAM_KEYS = cells.CORE_KEYS + cells.HEAD_KEYS
_DTYPES = {torch.float32: 4, torch.float64: 8}
_SOURCE = Path(__file__).with_name("_fastpath.cpp")
_ABI_VERSION = 2

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_lib_error: str | None = None  # set once the build failed: never retried in this process


def available(kind: str, device: torch.device | str, trainable: tuple[str, ...]) -> bool:
    """True when `loss_and_grads` runs natively for this cell kind, device and trainable set.

    Compiles the native library on first call (a few seconds, then cached on disk)."""
    if kind not in KIND_CODES or torch.device(device).type != "cpu":
        return False
    if any(name not in PARAM_KEYS for name in trainable):
        return False
    if os.environ.get("WORLDSWEEP_FASTPATH", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _library() is not None


def loss_and_grads(
    kind: str,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    trainable: tuple[str, ...],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-member loss (K,) and the gradients of each member's loss for `trainable`.

    Runs natively when the inputs allow it (CPU, float32/float64, library built), otherwise
    through autograd with identical semantics."""
    g = cells.check_kind(kind)
    _check_shapes(g, params, x, y, trainable)
    tensors = [x, y, *(params[n] for n in PARAM_KEYS)]
    native = x.dtype in _DTYPES and all(
        v.device.type == "cpu" and v.dtype == x.dtype for v in tensors
    )
    lib = _library() if native else None
    if lib is None:
        return autograd_loss_and_grads(kind, params, x, y, trainable)

    k, b, t, i = x.shape
    h = params["head_w"].shape[1]
    # the native side gathers each batch chunk into SIMD lanes itself (a strided torch
    # permute here cost almost as much as the whole forward + backward)
    xc, yc = x.detach().contiguous(), y.detach().contiguous()  # (K, B, T, I), (K, B, T-1)
    p = {n: params[n].detach().contiguous() for n in PARAM_KEYS}
    grads = {n: torch.empty_like(p[n]) for n in PARAM_KEYS}
    loss = torch.empty(k, dtype=torch.float64)
    need_core = any(n in cells.CORE_KEYS for n in trainable)
    rc = lib.fp_loss_and_grads(
        KIND_CODES[kind], _DTYPES[x.dtype], k, b, t, i, h, max(1, torch.get_num_threads()),
        int(need_core), SIGMA,
        *(p[n].data_ptr() for n in PARAM_KEYS),
        xc.data_ptr(), yc.data_ptr(), loss.data_ptr(),
        *(grads[n].data_ptr() for n in PARAM_KEYS),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(
            f"native fast path failed with code {rc} (1 bad arguments, 3 out of memory)"
        )
    return loss.to(x.dtype), {n: grads[n] for n in trainable}


def autograd_loss_and_grads(
    kind: str,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    trainable: tuple[str, ...],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The same quantity through trainers.cells and autograd (fallback and test oracle)."""
    leaves = {n: params[n].detach().requires_grad_(n in trainable) for n in PARAM_KEYS}
    with torch.enable_grad():
        hs, _ = cells.run_cell(kind, leaves, x[:, :, :-1])  # (K, B, T-1, H)
        pred = cells.readout(leaves, hs)  # (K, B, T-1)
        loss = gaussian_nll(pred, y)  # (K,)
        wanted = [leaves[n] for n in trainable]
        gs = torch.autograd.grad(loss.sum(), wanted) if wanted else ()
    return loss.detach(), dict(zip(trainable, gs, strict=True))


def gaussian_nll(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over all but the first dim of 0.5 * ((y - pred)^2 / sigma^2 + log(2 pi sigma^2))."""
    per = 0.5 * ((y - pred) ** 2 / SIGMA**2 + math.log(2 * math.pi * SIGMA**2))
    return per.flatten(1).mean(dim=1)


def _check_shapes(
    g: int,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    trainable: tuple[str, ...],
) -> None:
    missing = [n for n in PARAM_KEYS if n not in params]
    if missing:
        raise ValueError(f"`params` lacks {missing}; expected {list(PARAM_KEYS)}")
    unknown = [n for n in trainable if n not in PARAM_KEYS]
    if unknown:
        raise ValueError(f"`trainable` has unknown names {unknown}; valid: {list(PARAM_KEYS)}")
    if x.dim() != 4:
        raise ValueError(f"`x` must be (K, B, T, I), got shape {tuple(x.shape)}")
    k, b, t, i = x.shape
    if t < 2:
        raise ValueError(f"`x` needs T >= 2 time steps, got {t}")
    if tuple(y.shape) != (k, b, t - 1):
        raise ValueError(f"`y` must be (K, B, T-1) = {(k, b, t - 1)}, got {tuple(y.shape)}")
    h = params["head_w"].shape[-1]
    expect = {"w_ih": (k, g * h, i), "w_hh": (k, g * h, h), "b_ih": (k, g * h), "b_hh": (k, g * h),
              "head_w": (k, h), "head_b": (k,)}  # fmt: skip
    for n, shape in expect.items():
        if tuple(params[n].shape) != shape:
            raise ValueError(
                f"`params[{n!r}]` must have shape {shape}, got {tuple(params[n].shape)}"
            )


# ---- building and loading the native library ---------------------------------------------


def _library() -> ctypes.CDLL | None:
    global _lib, _lib_error
    if _lib is not None or _lib_error is not None:
        return _lib
    with _lock:
        if _lib is None and _lib_error is None:
            try:
                _lib = _load(_build())
            except Exception as e:  # no compiler, read-only disk, ...: keep the autograd path
                _lib_error = f"{type(e).__name__}: {e}"
                log.warning(
                    "worldsweep native fast path unavailable, using autograd: %s", _lib_error
                )
    return _lib


def cache_dir() -> Path:
    """Where built libraries are kept (per user)."""
    env = os.environ.get("WORLDSWEEP_CACHE_DIR")
    if env:
        return Path(env) / "fastpath"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "worldsweep" / "fastpath"


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        raise FileNotFoundError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
    return path


def _cpu_fingerprint() -> str:
    # -march=native output must not be shared between different CPUs (shared home dirs)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


_FLAG_SETS = (
    ["-O3", "-funroll-loops", "-march=native", "-std=c++17", "-fPIC", "-shared", "-pthread"],
    ["-O3", "-funroll-loops", "-std=c++17", "-fPIC", "-shared", "-pthread"],  # compilers without -march=native
)


def _build() -> Path:
    cxx = _compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    source = _SOURCE.read_bytes()
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(
            b"\0".join(
                [
                    source,
                    version.encode(),
                    " ".join(flags).encode(),
                    _cpu_fingerprint().encode(),
                    platform.machine().encode(),
                ]
            )  # fmt: skip
        ).hexdigest()[:16]
        out_dir = _writable(cache_dir())
        target = out_dir / f"_fastpath_{key}.so"
        if target.exists():
            return target
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        proc = subprocess.run([cxx, *flags, str(_SOURCE), "-o", tmp], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        if proc.returncode == 0:
            # atomic: concurrent builders (Ray workers) never see half a file
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-1500:]}")
    raise RuntimeError("compiling _fastpath.cpp failed:\n" + "\n".join(errors))


def _writable(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    fallback = (
        Path(tempfile.gettempdir())
        / f"worldsweep-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        / "fastpath"
    )
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.fp_abi_version.restype = ctypes.c_int
    if lib.fp_abi_version() != _ABI_VERSION:
        raise RuntimeError(f"{path} has ABI {lib.fp_abi_version()}, expected {_ABI_VERSION}")
    lib.fp_lanes.argtypes = [ctypes.c_int]
    lib.fp_lanes.restype = ctypes.c_int
    i, vp = ctypes.c_int, ctypes.c_void_p
    lib.fp_loss_and_grads.argtypes = (
        # typeshed joins c_int and c_double to object, which argtypes does not accept
        [i] * 8 + [i, ctypes.c_double] + [vp] * 6 + [vp, vp, vp] + [vp] * 6  # type: ignore[assignment]
    )
    lib.fp_loss_and_grads.restype = ctypes.c_int
    return lib
