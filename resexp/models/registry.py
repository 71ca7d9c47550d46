"""Model registry: architecture name -> builder and how the arch is shown, as in timm.

An architecture is one plain ``def`` decorated with ``@register_model(...)`` (archs.py).
Its name is the function's name; its signature is what it takes: ``depth``, the input
shape it needs (SHAPE) and its options, each with its default. The decorator records how
plots and reports show it (label, colour, marker), whether it is residual, its depth rule
and its place in legends. A ``model.*`` option the chosen arch does not take, set to
anything but its default, is an error: a setting that is accepted must be used.

Torch-free: nothing here imports torch, and builders import their nets inside their
bodies, so checking a config or drawing a legend never loads it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from resexp.errors import UserError
from resexp.models.depth import BadDepth

# The input's shape, passed to a builder that names it in its signature: not options.
SHAPE = ("in_channels", "num_classes", "image_size")


@dataclass(frozen=True)
class ArchInfo:
    name: str
    label: str       # legend and report label
    colour: str      # its colour in every figure
    marker: str      # its matplotlib marker
    residual: bool   # has shortcuts (the plain twin has not)
    order: int       # place in legends and tables: registration order, plain nets before their twins
    depth_rule: Callable[..., int] = field(repr=False)  # depth -> repeats, or a UserError naming valid depths
    builder: Callable[..., Any] = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict)  # option -> its default

    def blocks(self, depth: int, options: Mapping) -> int:
        """The repeats of ``depth`` under the depth rule (which reads e.g. ``bottleneck``)."""
        takes = inspect.signature(self.depth_rule).parameters
        return self.depth_rule(depth, **{k: v for k, v in options.items() if k in takes})


_REGISTRY: dict[str, ArchInfo] = {}


def _plain(value):
    """A config value comparable with a signature default (lists and tuples alike)."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def _options_of(fn: Callable) -> dict[str, Any]:
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "depth":
        raise ValueError(f"model builder {fn.__name__} must take depth first")
    options = {p.name: p.default for p in params[1:] if p.name not in SHAPE}
    undefaulted = [k for k, v in options.items() if v is inspect.Parameter.empty]
    if undefaulted:
        raise ValueError(f"model builder {fn.__name__}: option {undefaulted[0]} needs a default")
    for k, v in options.items():  # one default per option, whichever arch takes it
        other = option_defaults().get(k, v)
        if _plain(other) != _plain(v):
            raise ValueError(f"model builder {fn.__name__}: {k}={v!r}, but another arch has {k}={other!r}")
    return options


def register_model(*, label: str, colour: str, residual: bool, depth_rule: Callable[..., int],
                   marker: str = "o"):
    """Decorator: make ``fn`` buildable as ``get_model(fn.__name__, ...)``. Names are unique."""

    def wrap(fn):
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _REGISTRY[fn.__name__] = ArchInfo(fn.__name__, label, colour, marker, residual, len(_REGISTRY),
                                          depth_rule, fn, _options_of(fn))
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def arch_info(name: str) -> ArchInfo:
    """How ``name`` is built and shown; UserError for an arch that is not registered."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model.arch {name!r} (available: {', '.join(list_models())})")
    return _REGISTRY[name]


def option_defaults() -> dict[str, Any]:
    """Every option some arch takes, with its default."""
    return {k: v for info in _REGISTRY.values() for k, v in info.options.items()}


def check_model(model: Mapping) -> ArchInfo:
    """UserError unless ``model`` (a config's model section: arch, depth, options) names a
    registered arch, a depth it accepts, and no option it does not take set away from its
    default."""
    info = arch_info(model["arch"])
    options = {k: v for k, v in model.items() if k not in ("arch", "depth")}
    defaults = option_defaults()
    for k, v in options.items():
        if k not in info.options and (k not in defaults or _plain(v) != _plain(defaults[k])):
            has = ", ".join(info.options) or "none"
            raise UserError(f"model.{k} is not an option of arch {info.name} (its options: {has})")
    info.blocks(model["depth"], options)
    return info


def check_depths(model: Mapping, archs: Sequence[str], depths: Sequence[int]) -> None:
    """UserError naming every depth of ``depths`` that an arch of ``archs`` does not accept
    (``model``: the options the depth rules read, e.g. bottleneck), all in one line: a sweep
    list with two bad depths is fixed in one go, not one rerun per depth."""
    options = {k: v for k, v in model.items() if k not in ("arch", "depth")}
    groups: dict[tuple, list[str]] = {}  # (bad depths, rule, nearest) -> the archs it holds for
    every = []
    for arch in archs:
        bad = []
        for depth in depths:
            try:
                arch_info(arch).blocks(depth, options)
            except BadDepth as err:
                bad.append(err)
        every += bad
        if bad:
            nearest = tuple(sorted({n for e in bad for n in e.nearest}))
            groups.setdefault((tuple(e.depth for e in bad), bad[0].what, nearest), []).append(arch)
    if len({(e.depth, e.what) for e in every}) == 1:
        raise every[0]  # one bad depth: its own message, as a single run gets it
    parts = [f"{'depths' if len(bad) > 1 else 'depth'} {', '.join(map(str, bad))} "
             f"{'are' if len(bad) > 1 else 'is'} not {what} for {', '.join(names)}: nearest {', '.join(map(str, near))}"
             for (bad, what, near), names in groups.items()]
    if parts:
        raise UserError("; ".join(parts))


def get_model(arch: str, depth: int, **options):
    """Build ``arch`` at ``depth``; ``options`` are the input shape (SHAPE) and model
    options, checked as check_model does. Each goes to the builder if it names it."""
    shape = {k: options.pop(k) for k in SHAPE if k in options}
    info = check_model({"arch": arch, "depth": depth, **options})
    takes = inspect.signature(info.builder).parameters
    return info.builder(depth, **{k: v for k, v in {**shape, **options}.items() if k in takes})


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
