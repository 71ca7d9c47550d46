"""Every architecture, one ``def`` each: its signature lists the options it takes, its
decorator how it is shown. Registration order is legend order: plain nets before their
residual twins.

Colours are Okabe & Ito's colour-blind-safe palette ("Color Universal Design", 2008):
plain nets warm, residual nets cool. Its yellow (#F0E442) is not used: too pale on white.

Nothing here imports torch at import time: each builder imports its network in its body.
"""

from __future__ import annotations

from typing import Sequence

from resexp.models.depth import blocks_for_depth
from resexp.models.registry import register_model

CIFAR_WIDTHS = (16, 32, 64)  # filters per stage (§4.2)


def cifar_blocks(depth: int, bottleneck: bool = False) -> int:
    """Blocks per stage: depth = 6n + 2 (two convs a block), 9n + 2 with bottleneck blocks."""
    if bottleneck:
        return blocks_for_depth(depth, 9, 2, "9n+2 (bottleneck blocks)")
    return blocks_for_depth(depth, 6, 2, "6n+2")


def mlp_blocks(depth: int) -> int:
    return blocks_for_depth(depth, 2, 2, "2k+2 (input layer, k two-layer blocks, classifier)")


def _cifar_net(depth, in_channels, num_classes, shortcut, widths, bottleneck, checkpoint_segments, preact):
    from resexp.models import cifar  # torch: loaded only when a net is built

    basic, bottle = (cifar.PreActBlock, cifar.PreActBottleneck) if preact else (cifar.BasicBlock, cifar.Bottleneck)
    return cifar.CifarNet(bottle if bottleneck else basic, cifar_blocks(depth, bottleneck), list(widths), shortcut,
                          in_channels, num_classes, preact=preact, checkpoint_segments=checkpoint_segments)


@register_model(label="plain", colour="#D55E00", marker="o", residual=False, depth_rule=cifar_blocks)
def plain(depth: int, in_channels: int, num_classes: int, widths: Sequence[int] = CIFAR_WIDTHS,
          bottleneck: bool = False, checkpoint_segments: int = 0):
    """He et al. 2016 §4.2's plain net: resnet's layers without its shortcuts."""
    return _cifar_net(depth, in_channels, num_classes, None, widths, bottleneck, checkpoint_segments, preact=False)


@register_model(label="residual (resnet)", colour="#0072B2", marker="s", residual=True, depth_rule=cifar_blocks)
def resnet(depth: int, in_channels: int, num_classes: int, shortcut: str = "A",
           widths: Sequence[int] = CIFAR_WIDTHS, bottleneck: bool = False, checkpoint_segments: int = 0):
    """§4.2's ResNet: shortcut A pads with zeros (no parameters), B projects where the shape changes."""
    return _cifar_net(depth, in_channels, num_classes, shortcut, widths, bottleneck, checkpoint_segments,
                      preact=False)


@register_model(label="residual (preact_resnet)", colour="#009E73", marker="D", residual=True,
                depth_rule=cifar_blocks)
def preact_resnet(depth: int, in_channels: int, num_classes: int, shortcut: str = "A",
                  widths: Sequence[int] = CIFAR_WIDTHS, bottleneck: bool = False, checkpoint_segments: int = 0):
    """The pre-activation ResNet (He et al. 2016b); bottleneck gives ResNet-164/1001."""
    return _cifar_net(depth, in_channels, num_classes, shortcut, widths, bottleneck, checkpoint_segments,
                      preact=True)


def _mlp(depth, in_channels, num_classes, image_size, mlp_widths, mlp_batch_norm, residual):
    from resexp.models.cifar import he_init  # torch: loaded only when a net is built
    from resexp.models.mlp import MLPNet

    net = MLPNet(in_channels * image_size * image_size, num_classes, mlp_blocks(depth), list(mlp_widths),
                 mlp_batch_norm, residual)
    he_init(net)
    return net


@register_model(label="plain (mlp_plain)", colour="#E69F00", marker="o", residual=False, depth_rule=mlp_blocks)
def mlp_plain(depth: int, in_channels: int, num_classes: int, image_size: int,
              mlp_widths: Sequence[int] = (256,), mlp_batch_norm: bool = True):
    """The founding note's dense net without shortcuts."""
    return _mlp(depth, in_channels, num_classes, image_size, mlp_widths, mlp_batch_norm, residual=False)


@register_model(label="residual (mlp_resnet)", colour="#56B4E9", marker="s", residual=True, depth_rule=mlp_blocks)
def mlp_resnet(depth: int, in_channels: int, num_classes: int, image_size: int,
               mlp_widths: Sequence[int] = (256,), mlp_batch_norm: bool = True):
    """The founding note's dense net: a[l+2] = relu(z[l+2] + a[l]), a projection where the width changes."""
    return _mlp(depth, in_channels, num_classes, image_size, mlp_widths, mlp_batch_norm, residual=True)
