"""What a run's numbers depend on besides its config: the hardware and libraries.

The same config gives the same numbers on the same machine with the same thread
count (and, with ``train.deterministic=true``, on the same GPU); across machines
it does not: CPU bf16 kernels differ between AVX512-BF16 and AMX, thread counts
change the order of floating-point sums, and cuDNN picks kernels by timing. So
every summary.json records what would explain a difference, and ``resexp report``
says when the runs it averages came from different hardware.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

LIBRARIES = ("torch", "torchvision", "numpy", "hydra-core", "omegaconf")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_features() -> list[str]:
    """The native bf16 instruction sets this CPU advertises (avx512_bf16, amx_bf16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("avx512_bf16", "amx_bf16") if f in flags]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe(device: torch.device, amp: bool) -> dict:
    """The summary.json keys that say where and how a run computed."""
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "cpu_model": cpu_model(),
        "cpu_bf16": cpu_bf16_features(),
        "precision": "bf16 autocast" if amp else "fp32",
        "cuda_version": torch.version.cuda if cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "python_version": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


def make_deterministic(on: bool) -> None:
    """``train.deterministic``: deterministic kernels and cuDNN's fixed choices instead of
    its timed benchmark, for bit-identical reruns on the same machine (slower on GPUs).
    cuBLAS needs its workspace setting before its first use, so it is set here, early."""
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    if on:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
