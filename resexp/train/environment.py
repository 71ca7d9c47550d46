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


def cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo ("model name", "flags", ...); {} off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe(device: torch.device, amp: bool) -> dict:
    """The summary.json keys that say where and how a run computed."""
    cuda, cpu = device.type == "cuda", cpuinfo()
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_bf16": [f for f in ("avx512_bf16", "amx_bf16") if f in cpu.get("flags", "").split()],  # native bf16
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
