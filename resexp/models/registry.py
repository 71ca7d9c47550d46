"""Model registry: architecture name -> builder, as in torchvision/timm.

A builder takes ``depth``, the input shape and the number of classes, plus the
options of its family from the ``model`` config (unused options of other
families are simply not passed to it).
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from resexp.errors import UserError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: make ``fn`` buildable as ``get_model(name, ...)``. Names are unique."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_builder(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise UserError(f"unknown model.arch {name!r} (available: {', '.join(list_models())})")
    return _REGISTRY[name]


def get_model(arch: str, **options) -> nn.Module:
    """Build ``arch`` with the options its builder accepts; the rest are ignored."""
    builder = get_builder(arch)
    accepted = inspect.signature(builder).parameters
    return builder(**{k: v for k, v in options.items() if k in accepted})


def check_depth(arch: str, depth: int, **options) -> None:
    """Raise UserError if ``depth`` is not valid for ``arch`` (names the nearest valid ones)."""
    builder = get_builder(arch)
    valid = getattr(builder, "valid_depth", None)
    if valid is None:
        return
    accepted = inspect.signature(valid).parameters
    valid(depth, **{k: v for k, v in options.items() if k in accepted})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
