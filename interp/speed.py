"""Settings that make CPU training faster; applied by the CLIs and the training loop, never on import.

Denormals. Once a run has memorised, the probabilities of wrong classes fall below 1e-38 and the
float32 loss gradient would fill with denormal numbers, which x86 CPUs process many times slower
(a p = 113 step went from 27 to 130 ms on a 2-core Xeon late in training). Two defences, each
enough on its own:

* at the source: the fast path's loss gradient sets values below float32's smallest normal number
  to zero before it is cast to float32 (``interp.model.softmax_grad``), so training makes no denormals;
* everywhere else (the hooked engine, the analysers): ``flush_denormals`` turns on flush-to-zero and
  denormals-are-zero in *every* thread torch computes on. ``torch.set_flush_denormal`` alone changes
  only the calling thread, and torch's OpenMP workers, once started, keep their own setting;
  ``set_flush_denormal_everywhere`` therefore also runs it inside one OpenMP parallel region of the
  OpenMP runtime torch uses (``GOMP_parallel``), once in each worker, and new workers inherit it.

Either changes only values smaller than 1.2e-38.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep freed tensor memory in the glibc heap instead of returning it to the OS.

    Every training step allocates and frees the same few MB-sized activation tensors. With glibc's
    defaults each of them is a fresh ``mmap`` whose pages fault in again on first touch (thousands
    of page faults per p = 113 step; the hooked path's step goes from about 200 to 140 ms with this
    setting). Raising the mmap and trim thresholds
    makes the allocator reuse the memory. Returns whether the settings took (glibc only).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError, TypeError):
        ok = False
    if not ok:
        log.debug("mallopt not available; allocator left as it is")
    return ok


@functools.cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The GNU OpenMP runtime torch's CPU kernels run on (``None`` if torch uses none or another)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "libgomp" in line and line.rstrip().endswith((".so", ".so.1"))})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.GOMP_parallel  # noqa: B018 - the entry point must exist
            return lib
        except (OSError, AttributeError):
            continue
    return None


def set_flush_denormal_everywhere(on: bool) -> int:
    """Turn float32/64 flush-to-zero and denormals-are-zero on (or off) in this thread and in every
    OpenMP worker thread torch computes on.

    Returns the number of threads the setting reached (1 where no OpenMP runtime was found: then
    only this thread and the workers started after this call have it). Does nothing on a CPU
    without the setting (``torch.set_flush_denormal`` returns False).
    """
    if not torch.set_flush_denormal(on):
        return 0
    lib = _openmp_runtime()
    n = torch.get_num_threads()
    if lib is None or n <= 1:
        return 1
    seen: set[int] = set()
    lock = threading.Lock()

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def body(_):  # runs once in each thread of the team (the GIL is taken per call)
        torch.set_flush_denormal(on)
        with lock:
            seen.add(threading.get_native_id())

    lib.GOMP_parallel(body, None, ctypes.c_uint(n), ctypes.c_uint(0))
    return len(seen)


@contextmanager
def flush_denormals():
    """Flush float32 denormals to zero in every compute thread inside the block (torch's default after)."""
    set_flush_denormal_everywhere(True)
    try:
        yield
    finally:
        set_flush_denormal_everywhere(False)


@contextmanager
def deterministic(on: bool = True):
    """Inside the block, torch's deterministic kernels (``torch.use_deterministic_algorithms``; the setting
    before is restored after). The hooked forward's embedding lookup ``W_E[tokens]`` has a backward that
    accumulates into the rows of ``W_E`` from several threads in no fixed order, so with two threads two
    identical runs of a sequence task differed in the last bits of ``W_E`` after one step; the deterministic
    kernel sorts first, and a resumed run then ends with the same bits as an uninterrupted one."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if on:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
