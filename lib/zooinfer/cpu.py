"""What this machine's CPU is: its name, physical cores and the instruction sets low-precision kernels need.

One reader of ``/proc/cpuinfo`` for the whole package (the environment manifest, the ONNX Runtime session's thread
count and cache tag, the INT8 / bf16 notes beside every low-precision timing). ``py-cpuinfo`` would do the same for
more operating systems, but it is one more dependency for four fields that Linux states in one file; elsewhere
:func:`isa_flags` is empty and the notes say the flags are unknown.
"""
from __future__ import annotations

import functools
import os
import platform

#: instruction-set flags (as /proc/cpuinfo spells them) that decide INT8 and bf16 speed on x86, and what each gives
LOW_PRECISION_FLAGS = {
    "avx512_vnni": "int8 dot products (AVX-512 VNNI)",
    "avx_vnni": "int8 dot products (AVX-VNNI, 256-bit)",
    "amx_int8": "int8 matrix tiles (AMX)",
    "avx512_bf16": "bf16 dot products (AVX-512 BF16)",
    "amx_bf16": "bf16 matrix tiles (AMX)",
    "avx512f": "AVX-512",
    "avx2": "AVX2",
}
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[tuple[str, str], ...]:
    """(key, value) lines of /proc/cpuinfo ((): not Linux, or unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            return tuple((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in f) if k.strip())
    except OSError:
        return ()


def cpu_name() -> str:
    """The CPU's model name (e.g. 'AMD EPYC 9R14'), else what ``platform`` knows."""
    return next((v for k, v in _cpuinfo() if k == "model name"), "") or platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical cores available to this process (falls back to the logical CPUs it may use)."""
    cores, phys = set(), None
    for key, value in _cpuinfo():
        if key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(cores) or avail, avail))


def isa_flags() -> tuple[str, ...]:
    """The flags of :data:`LOW_PRECISION_FLAGS` this CPU has, in that order (() where unknown)."""
    flags = set(next((v for k, v in _cpuinfo() if k in ("flags", "Features")), "").split())
    return tuple(f for f in LOW_PRECISION_FLAGS if f in flags)


def known() -> bool:
    """Whether this machine's instruction-set flags could be read (Linux)."""
    return any(k in ("flags", "Features") for k, _ in _cpuinfo())


def has_int8_dot() -> bool:
    """Whether the CPU has int8 dot-product instructions (VNNI or AMX): ONNX Runtime's u8s8 kernels use them and
    need no reduced range."""
    return any(f in isa_flags() for f in INT8_FLAGS)


def has_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX-512 BF16 or AMX)."""
    return any(f in isa_flags() for f in BF16_FLAGS)


def isa_note() -> str:
    """One line for beside a low-precision timing, e.g. 'CPU flags: avx512_vnni avx512_bf16 avx512f avx2 (AMD EPYC
    9R14)', or a note that they are unknown."""
    if not known():
        return f"CPU flags unknown on {platform.system() or 'this system'} ({cpu_name()})"
    flags = isa_flags()
    return f"CPU flags: {' '.join(flags) if flags else 'none of ' + ', '.join(LOW_PRECISION_FLAGS)} ({cpu_name()})"
