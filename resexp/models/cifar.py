"""The CIFAR networks of He et al. 2016 §4.2, and the pre-activation variant.

One network class; ``plain``, ``resnet`` and ``preact_resnet`` differ only in the
block they stack, and ``plain`` and ``resnet`` differ only in the shortcut — so
with option A (no parameters in the shortcut) they have exactly the same
parameters and a depth sweep compares exactly one thing.

Layout (§4.2): a 3x3 conv, then three stages of ``n`` blocks with 16/32/64 filters
at full, 1/2 and 1/4 resolution (the first conv of stages 2 and 3 has stride 2),
global average pooling, a fully connected classifier. A basic block holds two 3x3
convs, so depth = 6n + 2; a bottleneck block holds three, so depth = 9n + 2
(He et al., "Identity Mappings in Deep Residual Networks", 2016, ResNet-164/1001).
"""

from __future__ import annotations

import contextlib
from functools import partial, reduce
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from resexp.errors import UserError


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    # BN right after each conv (§3.4); the conv bias would be cancelled by BN.
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout))


class PadShortcut(nn.Module):
    """Option A (§4.1, §4.2): identity, subsampled by striding, extra channels zero.

    No parameters, so a residual net has exactly the parameters of its plain twin."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def make_shortcut(kind: str | None, cin: int, cout: int, stride: int) -> nn.Module | None:
    """None for a plain net; identity where shapes agree; else option A or B."""
    if kind is None:
        return None
    if cin == cout and stride == 1:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(cin, cout, stride)
    if kind == "B":  # a learned 1x1 projection (+BN) where the shape changes (§3.3 eq. 2)
        return conv_bn(cin, cout, 1, stride)
    raise UserError(f"model.shortcut must be A or B, got {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convs: a[l+2] = relu(z[l+2] + shortcut(a[l])), or relu(z[l+2]) when plain."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, shortcut: str | None):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, width, 3, stride), conv_bn(width, width, 3)
        self.shortcut = make_shortcut(shortcut, cin, width, stride)

    def forward(self, x):
        z = self.conv2(F.relu(self.conv1(x)))
        return F.relu(z if self.shortcut is None else z + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand to 4x width (post-activation, He et al. 2016 §4.1)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, shortcut: str | None):
        super().__init__()
        cout = width * self.expansion
        self.convs = nn.Sequential(
            conv_bn(cin, width, 1), nn.ReLU(), conv_bn(width, width, 3, stride), nn.ReLU(),
            conv_bn(width, cout, 1),
        )
        self.shortcut = make_shortcut(shortcut, cin, cout, stride)

    def forward(self, x):
        z = self.convs(x)
        return F.relu(z if self.shortcut is None else z + self.shortcut(x))


def bn_relu_conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), conv)


class PreActBlock(nn.Module):
    """Pre-activation basic block: x + conv(relu(bn(conv(relu(bn(x)))))) — nothing
    after the addition, so the identity path is clean end to end (He et al. 2016b)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, shortcut: str | None):
        super().__init__()
        self.convs = nn.Sequential(bn_relu_conv(cin, width, 3, stride), bn_relu_conv(width, width, 3))
        self.shortcut = make_shortcut(shortcut or "A", cin, width, stride)

    def forward(self, x):
        return self.convs(x) + self.shortcut(x)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (ResNet-164 / ResNet-1001 of He et al. 2016b)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, shortcut: str | None):
        super().__init__()
        cout = width * self.expansion
        self.convs = nn.Sequential(
            bn_relu_conv(cin, width, 1), bn_relu_conv(width, width, 3, stride),
            bn_relu_conv(width, cout, 1),
        )
        self.shortcut = make_shortcut(shortcut or "A", cin, cout, stride)

    def forward(self, x):
        return self.convs(x) + self.shortcut(x)


class CifarNet(nn.Module):
    """conv3x3 -> 3 stages of ``n`` blocks -> (BN-ReLU if pre-activation) -> GAP -> FC."""

    def __init__(self, block, n: int, widths: Sequence[int], shortcut: str | None,
                 in_channels: int, num_classes: int, preact: bool = False,
                 checkpoint_segments: int = 0):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.stem_post = nn.Identity() if preact else nn.Sequential(nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(cin, width, stride, shortcut))
                cin = width * block.expansion
        self.blocks = nn.Sequential(*blocks)
        if checkpoint_segments > len(blocks):
            raise UserError(f"model.checkpoint_segments={checkpoint_segments} is more than the "
                            f"{len(blocks)} blocks of this net")
        self.head_pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()) if preact else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        # Activation checkpointing trades one extra forward for memory (1000+ layers).
        self.checkpoint_segments = checkpoint_segments
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_post(self.stem(x))
        if self.checkpoint_segments and self.training and torch.is_grad_enabled():
            x = self._checkpointed_blocks(x)
        else:
            x = self.blocks(x)
        x = self.head_pre(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def _checkpointed_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks in ``checkpoint_segments`` segments; all but the last keep only their
        input and run again in backward (torch's checkpoint_sequential, plus the BN guard)."""
        blocks = list(self.blocks)
        size = len(blocks) // self.checkpoint_segments
        cut = size * (self.checkpoint_segments - 1)
        for start in range(0, cut, size):
            # No dropout or other randomness here, so the RNG state need not be saved for the
            # recomputation; saving it reads the CUDA generator, which a CUDA graph capture forbids.
            segment = blocks[start:start + size]
            x = checkpoint(_chain, segment, x, use_reentrant=False, preserve_rng_state=False,
                           context_fn=partial(_recompute_context, segment))
        return _chain(blocks[cut:], x)


def _chain(blocks, x: torch.Tensor) -> torch.Tensor:
    return reduce(lambda h, block: block(h), blocks, x)


def _recompute_context(blocks):
    """(forward, recomputation) contexts of a checkpointed segment: train-mode BN runs again
    in backward, and must not count the batch in its running statistics a second time."""
    return contextlib.nullcontext(), running_stats_frozen(blocks)


@contextlib.contextmanager
def running_stats_frozen(blocks):
    """The BN layers of ``blocks`` normalise with the batch's statistics, with the same kernel
    as in the forward, but add nothing to their running statistics: momentum 0 leaves them as
    they are, and without its counter a layer does not count the batch."""
    frozen = [m for block in blocks for m in block.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked) for m in frozen]
    for m in frozen:
        m.momentum, m.num_batches_tracked = 0.0, None
    try:
        yield
    finally:
        for m, (momentum, counter) in zip(frozen, saved):
            m.momentum, m.num_batches_tracked = momentum, counter


def he_init(model: nn.Module) -> None:
    """He et al. 2015 init (std = sqrt(2 / fan_in)) for every conv and linear layer,
    zero biases, BN as scale 1 / shift 0 — as the paper uses (§3.4)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
