"""Networks by name: ``get_model("resnet", depth=56, in_channels=3, num_classes=10, ...)``.

Every architecture is registered here with its depth rule, so the CLI can reject
an invalid depth before any data are loaded.
"""

from __future__ import annotations

from typing import Sequence

from resexp.models.cifar import BasicBlock, Bottleneck, CifarNet, PreActBlock, PreActBottleneck, he_init
from resexp.models.depth import blocks_for_depth
from resexp.models.mlp import MLPNet
from resexp.models.registry import check_depth, count_params, get_model, list_models, register_model

__all__ = ["check_depth", "count_params", "get_model", "list_models", "register_model"]


def _cifar_blocks(depth: int, bottleneck: bool = False) -> int:
    if bottleneck:
        return blocks_for_depth(depth, 9, 2, "9n+2 (bottleneck blocks)")
    return blocks_for_depth(depth, 6, 2, "6n+2")


def _cifar_builder(name: str, basic, bottle, shortcut_of, preact: bool):
    """Register one CIFAR family member; ``shortcut_of`` maps the config's shortcut
    option to what the block gets (None for the plain net: no shortcut at all)."""

    @register_model(name)
    def build(depth: int, in_channels: int, num_classes: int, shortcut: str = "A",
              widths: Sequence[int] = (16, 32, 64), bottleneck: bool = False,
              checkpoint_segments: int = 0, image_size: int = 32):
        block = bottle if bottleneck else basic
        return CifarNet(block, _cifar_blocks(depth, bottleneck), list(widths), shortcut_of(shortcut),
                        in_channels, num_classes, preact=preact,
                        checkpoint_segments=checkpoint_segments)

    build.valid_depth = _cifar_blocks
    return build


_cifar_builder("plain", BasicBlock, Bottleneck, lambda s: None, preact=False)
_cifar_builder("resnet", BasicBlock, Bottleneck, lambda s: s, preact=False)
_cifar_builder("preact_resnet", PreActBlock, PreActBottleneck, lambda s: s, preact=True)


def _mlp_blocks(depth: int) -> int:
    return blocks_for_depth(depth, 2, 2, "2k+2 (input layer, k two-layer blocks, classifier)")


def _mlp_builder(name: str, residual: bool):
    @register_model(name)
    def build(depth: int, in_channels: int, num_classes: int, image_size: int = 32,
              mlp_widths: Sequence[int] = (256,), mlp_batch_norm: bool = True):
        net = MLPNet(in_channels * image_size * image_size, num_classes, _mlp_blocks(depth),
                     list(mlp_widths), mlp_batch_norm, residual)
        he_init(net)
        return net

    build.valid_depth = _mlp_blocks
    return build


_mlp_builder("mlp_plain", residual=False)
_mlp_builder("mlp_resnet", residual=True)
