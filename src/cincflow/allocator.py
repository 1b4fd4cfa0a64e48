"""The CPU heap allocator of a flow job: keep freed blocks in the process for reuse.

glibc's malloc serves a block above its mmap threshold (128 KiB at first, raised as blocks are
freed) with a fresh mapping and unmaps it at free, and returns the heap's top to the system once it
exceeds the trim threshold. A flow's activations are megabytes each, allocated and freed every step,
so every step touches fresh pages, one page fault per 4 KiB: 5,000-8,000 minor faults per log_prob of
the benchmark's Glow here (next to none with the setting; the resident memory is the same), 10-35% of
its time on this virtual machine (README: Performance). :func:`keep_freed_memory` sets
both thresholds (``mallopt``) so that blocks up to 1 GiB come from the heap and freed memory stays
for the next step: the process holds its peak working set, as PyTorch's CUDA caching allocator does
on a GPU. The jobs call it when ``keep_freed_memory: true`` (the default); it never undoes itself.

It leaves the allocator alone where the user chose otherwise: another allocator preloaded
(jemalloc, tcmalloc, mimalloc: ``LD_PRELOAD``), glibc's malloc settings in the environment
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES`` with ``malloc``), or a C
library other than glibc (macOS, musl, Windows).
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BELOW = 1 << 30  # blocks up to this size come from, and go back to, the heap
OLD_GLIBC_LIMIT = 32 << 20  # the largest mmap threshold glibc before 2.26 accepts on 64-bit
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


def user_choice() -> str | None:
    """The reason to leave the allocator alone (another allocator, the user's own malloc settings, no
    glibc), or None."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in PRELOADED:
        if name in preload:
            return f"{name} is preloaded"
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if var in os.environ:
            return f"{var} is set"
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc options"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the C library is not glibc"
    return None


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed blocks up to 1 GiB (see the module docstring); returns what was
    done, in words. Idempotent; process-wide (DataLoader workers forked later inherit it)."""
    reason = user_choice()
    if reason is not None:
        return f"allocator left as it is: {reason}"
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    limit = KEEP_BELOW if mallopt(M_MMAP_THRESHOLD, KEEP_BELOW) else OLD_GLIBC_LIMIT
    if limit != KEEP_BELOW and not mallopt(M_MMAP_THRESHOLD, limit):
        return "allocator left as it is: glibc refused the mmap threshold"
    mallopt(M_TRIM_THRESHOLD, 2 * KEEP_BELOW - 1)  # c_int: at most 2^31 - 1
    return f"glibc malloc keeps freed blocks up to {limit >> 20} MiB for reuse"
