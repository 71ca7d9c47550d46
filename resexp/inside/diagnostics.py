"""Inside a network: layer responses (He et al. 2016, Fig. 7), gradient flow, the identity test.

Every measurement is a plain function of a model and fixed inputs; ``resexp.inside.monitor``
decides when a run calls them and writes their rows into the run folder.

What is measured, for the networks of ``resexp.models`` (a stem, then ``model.blocks``):

- **Layers**: the 3x3 convs (CIFAR nets) or the linear layers (dense nets) of the stem
  and of the blocks, in forward order; never a shortcut's projection, never the classifier.
  A layer's *response* is the output of the BatchNorm that runs right after it (next in
  registration order), or the layer's own output where no BN follows (pre-activation
  nets, dense nets without BN). Fig. 7 of the paper: "the outputs of each 3x3 layer,
  after BN and before other nonlinearity (ReLU/addition)".
- **Blocks**: each element of ``model.blocks``. Its residual branch F is its last child
  other than ``shortcut``; its shortcut s is ``shortcut`` (or nothing, in a plain net).
- **Stages**: a block whose output shape differs from its input shape starts a new stage
  (stride 2 or more channels); the stem is stage 0.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Layer:
    index: int          # 1-based, in forward order
    name: str           # the weight layer's module name, e.g. blocks.3.conv2.0
    stage: int          # 0 = the stem
    block: int          # 0 = the stem, else the 1-based block index
    module: nn.Module   # the conv or linear layer itself
    response: nn.Module  # its output is the layer's response


@dataclass(frozen=True)
class Block:
    index: int          # 1-based
    stage: int
    name: str
    module: nn.Module
    branch: nn.Module   # F: its output is what the shortcut's output is added to
    shortcut: nn.Module | None


@dataclass(frozen=True)
class Layout:
    layers: list[Layer]
    blocks: list[Block]


def _is_weight_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return tuple(module.kernel_size) == (3, 3)
    return isinstance(module, nn.Linear)


def _response_module(leaves: list[tuple[str, nn.Module]], i: int) -> nn.Module:
    """The BN right after leaf i if there is one that normalises its output, else leaf i."""
    layer = leaves[i][1]
    follower = leaves[i + 1][1] if i + 1 < len(leaves) else None
    width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if isinstance(follower, nn.modules.batchnorm._BatchNorm) and follower.num_features == width:
        return follower
    return layer


def _block_of(name: str) -> int:
    """'blocks.7.conv1.0' -> 8 (1-based); 0 for the stem."""
    parts = name.split(".")
    return int(parts[1]) + 1 if parts[0] == "blocks" else 0


def _block_stages(model: nn.Module, sample: torch.Tensor) -> list[int]:
    """Stage of each block, from the shapes one forward pass of ``sample`` shows."""
    shapes = []

    def keep(module, args, out):
        shapes.append((args[0].shape, out.shape))

    with torch.no_grad(), in_mode(model, False), _hooks([(b, keep) for b in model.blocks]):
        model(sample)
    stages, stage = [], 1
    for i, (shape_in, shape_out) in enumerate(shapes):
        stage += int(i > 0 and shape_in != shape_out)
        stages.append(stage)
    return stages


def layout(model: nn.Module, sample: torch.Tensor) -> Layout:
    """The probed layers and blocks of ``model`` (``sample``: a few inputs of the right shape)."""
    stages = _block_stages(model, sample)
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    layers = []
    for i, (name, module) in enumerate(leaves):
        top = name.split(".")[0]
        if top in ("stem", "blocks") and "shortcut" not in name.split(".") and _is_weight_layer(module):
            block = _block_of(name)
            layers.append(Layer(len(layers) + 1, name, stages[block - 1] if block else 0, block,
                                module, _response_module(leaves, i)))
    blocks = []
    for i, module in enumerate(model.blocks):
        branch = [m for n, m in module.named_children() if n != "shortcut"][-1]
        blocks.append(Block(i + 1, stages[i], f"blocks.{i}", module, branch,
                            getattr(module, "shortcut", None)))
    return Layout(layers, blocks)


@contextlib.contextmanager
def in_mode(model: nn.Module, training: bool):
    """Train-mode (BN on batch statistics) or eval-mode BN for the duration; the model's
    mode is restored afterwards."""
    was_training = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _hooks(pairs):
    handles = [module.register_forward_hook(fn) for module, fn in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _sum_of_squares(t: torch.Tensor) -> float:
    # torch's float32 sum is pairwise (exact to ~1e-7 here); float64 copies cost 4x the time.
    return t.detach().float().square().sum().item()


class _Moments:
    """Running count, sum and sum of squares: the std of a layer's response over every
    element of every image, accumulated batch by batch (combined in Python's float64)."""

    def __init__(self):
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, t: torch.Tensor) -> None:
        self.n += t.numel()
        self.total += t.detach().float().sum().item()
        self.squares += _sum_of_squares(t)

    def std(self) -> float:
        mean = self.total / self.n
        return math.sqrt(max(self.squares / self.n - mean * mean, 0.0))


class _BlockNorms:
    """Squared norms of F(x), s(x) and block(x) - s(x), summed over images."""

    def __init__(self):
        self.branch = self.base = self.change = 0.0
        self.defined = True
        self.scratch = {}

    def finish(self, x: torch.Tensor, y: torch.Tensor) -> None:
        f = self.scratch.pop("branch")
        s = self.scratch.pop("shortcut", x)
        if s.shape != f.shape:  # a plain block that changes the shape has no identity to compare with
            self.defined = False
            return
        self.branch += _sum_of_squares(f)
        self.base += _sum_of_squares(s)
        self.change += _sum_of_squares(y - s)

    def ratios(self) -> tuple[float, float]:
        if not self.defined or self.base == 0:
            return math.nan, math.nan
        return math.sqrt(self.branch / self.base), math.sqrt(self.change / self.base)


def _block_hooks(block: Block, norms: _BlockNorms) -> list:
    def keep(key):
        return lambda m, args, out: norms.scratch.__setitem__(key, out)
    pairs = [(block.branch, keep("branch"))]
    if block.shortcut is not None:
        pairs.append((block.shortcut, keep("shortcut")))
    pairs.append((block.module, lambda m, args, out: norms.finish(args[0], out)))
    return pairs


@torch.no_grad()
def forward_stats(model: nn.Module, lay: Layout, batches, batch_stats: bool = False) -> tuple[list[dict], list[dict]]:
    """One pass over ``batches`` (normalised images): the std of every layer's response, and
    per block ‖F(x)‖/‖s(x)‖ and ‖block(x) - s(x)‖/‖s(x)‖, where s(x) is the shortcut's output
    (the block's input in a plain net) and norms run over all images. A zero-weight residual
    block gives 0 for both: it passes its input on unchanged.

    BN uses its running statistics (eval mode, as Fig. 7), or with ``batch_stats`` each
    batch's own (as SGD sees the net; for an untrained net, whose running statistics are
    still their initial 0 and 1). BN's buffers are left as they were either way."""
    moments = {layer.index: _Moments() for layer in lay.layers}
    norms = {block.index: _BlockNorms() for block in lay.blocks}
    pairs = [(layer.response, lambda m, a, out, k=layer.index: moments[k].add(out)) for layer in lay.layers]
    for block in lay.blocks:
        pairs += _block_hooks(block, norms[block.index])
    buffers = _untouched_buffers(model) if batch_stats else contextlib.nullcontext()
    with buffers, _hooks(pairs), in_mode(model, batch_stats):
        for x in batches:
            model(x)
    responses = [{"layer": layer.index, "name": layer.name, "stage": layer.stage, "block": layer.block,
                  "std": moments[layer.index].std()} for layer in lay.layers]
    identity = []
    for block in lay.blocks:
        ratio, change = norms[block.index].ratios()
        identity.append({"block": block.index, "stage": block.stage, "name": block.name,
                         "branch_ratio": ratio, "change": change})
    return responses, identity


@contextlib.contextmanager
def _untouched_buffers(model: nn.Module):
    """Train-mode BN updates its running statistics; put them back exactly afterwards, in
    place (a captured CUDA graph keeps pointing at the same tensors)."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    segments = getattr(model, "checkpoint_segments", 0)
    if segments:
        model.checkpoint_segments = 0  # block outputs must be in the graph to differentiate by them
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
        if segments:
            model.checkpoint_segments = segments


def gradient_norms(model: nn.Module, lay: Layout, x: torch.Tensor, y: torch.Tensor) -> tuple[list[dict], float]:
    """On one batch in train mode (BN on batch statistics, as an SGD step sees it): the norm
    of the loss gradient w.r.t. every layer's weight and every block's output, and the loss.
    Nothing of the model changes: no .grad is written, BN buffers are restored."""
    outputs = []
    pairs = [(block.module, lambda m, a, out: outputs.append(out)) for block in lay.blocks]
    with _untouched_buffers(model), _hooks(pairs), in_mode(model, True):
        loss = F.cross_entropy(model(x).float(), y)
        weights = [layer.module.weight for layer in lay.layers]
        grads = torch.autograd.grad(loss, weights + outputs)
    rows = [{"kind": "weight", "index": layer.index, "stage": layer.stage, "block": layer.block,
             "name": layer.name, "norm": g.double().norm().item()}
            for layer, g in zip(lay.layers, grads)]
    rows += [{"kind": "block_output", "index": block.index, "stage": block.stage, "block": block.index,
              "name": block.name, "norm": g.double().norm().item()}
             for block, g in zip(lay.blocks, grads[len(weights):])]
    return rows, loss.item()
