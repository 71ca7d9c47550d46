"""Will a model fit this machine? A size estimate made before anything is built.

Every registered family is ``stem + n identical repeats + head`` per stage, so its
parameter count and its activations are affine in the number of repeats ``n``. The
model is built on PyTorch's meta device (shapes only, no memory) at the two
smallest valid depths, one image is pushed through it, and the figures for the
requested depth are extrapolated from those two. A 999,999,998-layer request is
thus refused in milliseconds with its figure, instead of building layers until
memory runs out.
"""

from __future__ import annotations

import functools
import json
import os

import torch
from torch import nn

from resexp.errors import UserError
from resexp.models.registry import arch_info, get_model


def device_of(spec: str) -> torch.device:
    """The device of ``train.device``: auto is CUDA when there is one; an unavailable
    CUDA device is a UserError."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"train.device={spec} but no CUDA device is available (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"train.device={spec} but this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def _small_depths(arch: str, options: dict) -> tuple[int, int]:
    """The two smallest depths the arch accepts (its n = 1 and n = 2)."""
    info, found = arch_info(arch), []
    for depth in range(1, 64):
        try:
            info.blocks(depth, options)
        except UserError:
            continue
        found.append(depth)
        if len(found) == 2:
            return found[0], found[1]
    raise UserError(f"{arch}: no valid small depth found")  # a registry bug, not a user mistake


def _measure(arch: str, depth: int, options: dict) -> tuple[int, int]:
    """Parameters, and elements kept for the backward pass per image, of one net."""
    with torch.device("meta"):
        model = get_model(arch, depth=depth, **options).eval()  # eval: BN takes one image
        x = torch.empty(1, options["in_channels"], options["image_size"], options["image_size"])
    count = [0]

    def hook(module, inputs, output):
        if not isinstance(module, nn.Identity) and isinstance(output, torch.Tensor):
            count[0] += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    model(x)
    for h in handles:
        h.remove()
    return sum(p.numel() for p in model.parameters()), count[0]


# The options that size a net: what the error of one too large to build names.
SIZES = ("widths", "mlp_widths", "in_channels", "num_classes", "image_size")


@functools.lru_cache(maxsize=64)
def _smallest_two(arch: str, options_json: str) -> tuple[int, tuple[int, int], int, tuple[int, int]]:
    """The two smallest nets of a family, measured once per family and shape: every depth
    of a sweep extrapolates from the same pair."""
    options = json.loads(options_json)
    options["checkpoint_segments"] = 0  # count every activation; check_fits divides
    d1, d2 = _small_depths(arch, options)
    try:
        return d1, _measure(arch, d1, options), d2, _measure(arch, d2, options)
    except (RuntimeError, OverflowError) as err:
        if "overflow" not in str(err).lower():
            raise  # a bug, not a size
        # The schema bounds widths and image size (resexp.settings.schema.MAX_WIDTH, ...), not
        # dataset.num_classes: a classifier of 10**18 outputs is too large even as shapes.
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(options.items()) if k in SIZES)
        raise UserError(f"{arch}: a net of these sizes is too large to build, even as shapes ({sizes})") from None


def estimate(cfg) -> tuple[int, int]:
    """Parameters, and activations per image, of ``cfg``'s model, without building it."""
    m, ds = cfg.model, cfg.dataset
    options = {k: (list(v) if not isinstance(v, (int, float, str, bool)) else v)
               for k, v in m.items() if k not in ("arch", "depth")}
    options.update(in_channels=int(ds.channels), num_classes=int(ds.num_classes), image_size=int(ds.image_size))
    d1, small, d2, next_up = _smallest_two(m.arch, json.dumps(options, sort_keys=True))
    # How many repeats beyond the smallest net: a whole number for a valid depth, and integers
    # throughout, so the figures are exact however deep the net.
    k = (int(m.depth) - d1) // (d2 - d1)
    return small[0] + k * (next_up[0] - small[0]), small[1] + k * (next_up[1] - small[1])


def memory_of(device: torch.device) -> int:
    """Bytes of memory training can use on ``device``: the GPU's, or the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n < 1e12 else f"{n / 1e12:,.0f} TB"


def check_fits(cfg, device: torch.device) -> None:
    """UserError, with the figures, if training ``cfg`` cannot fit ``device``'s memory. Checked
    where a run trains (train.loop.setup) and where a sweep plans its local runs, not when a
    config loads: the device is the training host's, and loading a config needs no torch."""
    params, activations = estimate(cfg)
    segments, have = cfg.model.checkpoint_segments, memory_of(device)
    # Rough training memory: fp32 weights, gradients and momentum, plus the activations of
    # one batch (fewer when they are recomputed in segments).
    need = 3 * 4 * params + activations * cfg.train.batch_size * 4 // max(segments, 1)
    if need > have:
        hint = "" if segments else "; model.checkpoint_segments=8 recomputes activations"
        raise UserError(f"{cfg.model.arch}-{cfg.model.depth} needs about {_gb(need)} to train at batch "
                        f"{cfg.train.batch_size} ({params:,} parameters), more than the {_gb(have)} "
                        f"of {device.type}{hint}")
