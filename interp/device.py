"""Which torch device a command computes on, and a description of the machine for ``config.json``.

Every CLI takes ``--device`` (``cpu``, ``cuda`` or ``cuda:N``); ``resolve`` turns it into a
``torch.device`` or refuses it in one line. The device is where a run computes, not part of what it
computes, so it is not a ``TrainConfig`` field: a run may start on a GPU and resume on a CPU. What
it ran on is recorded in ``config.json`` (``machine``: ``describe``), because one run's step counts
depend on the float kernels of the machine.
"""

from __future__ import annotations

import functools
import os
import platform

import torch

from interp.config import ConfigError

# instruction-set extensions that change which float kernels torch picks on x86 (and NEON/SVE on ARM)
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "neon", "asimd", "sve")


def resolve(name: str, flag: str = "--device") -> torch.device:
    """``name`` as a ``torch.device`` that exists on this machine.

    Raises:
        ConfigError: one line naming ``flag`` and the value, if it is not ``cpu``/``cuda``/``cuda:N``
            or that device is not there.
    """
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{flag} {name!r}: not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ConfigError(f"{flag} {name}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise ConfigError(f"{flag} {name}: CUDA is not available on this machine (torch {torch.__version__}, "
                          f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU found'})")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


@functools.cache
def cpu_info() -> dict[str, object]:
    """The CPU's model name and the float-relevant instruction-set flags it has (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cpu_isa": [f for f in _ISA_FLAGS if f in flags], "cpu_count": os.cpu_count()}


def describe(device: torch.device | str = "cpu") -> dict[str, object]:
    """What ``config.json`` records of the machine: the device, the CPU (model, ISA flags), the GPU's
    name when the device is CUDA, the torch threads, and the torch build."""
    dev = torch.device(device)
    out: dict[str, object] = {"device": str(dev), **cpu_info(), "torch_threads": torch.get_num_threads(),
                              "torch": torch.__version__}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
        out["cuda"] = torch.version.cuda
    return out


def name(device: torch.device | str = "cpu") -> str:
    """One phrase for a result's provenance: the CPU's model and core count, after the GPU's name on CUDA."""
    d = describe(device)
    cpu = f"{d['cpu']}, {d['cpu_count']} cores"
    return f"{d['gpu']} ({cpu})" if "gpu" in d else cpu
