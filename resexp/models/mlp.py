"""The fully connected networks of the project's founding note.

A residual block is two linear layers whose output is added to the block's input
before the second activation:  a[l+2] = g(z[l+2] + a[l]),  z[l+2] = W[l+2] a[l+1] + b.
If the block's weights are zero then z[l+2] = 0 and a[l+2] = g(a[l]) = a[l] for
ReLU and a[l] >= 0: the block is the identity, so adding blocks "in the worst case
causes no harm". Where the width changes, the shortcut is a learned projection
W_s a[l] (no bias). The plain twin is the same stack without the addition.

depth = number of weight layers on the main path = 1 (input layer) + 2 per block
+ 1 (classifier), so depth = 2k + 2 for k >= 1 blocks.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def linear_bn(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    # With BN the bias is redundant (BN's shift replaces it).
    layers = [nn.Linear(cin, cout, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(cout))
    return nn.Sequential(*layers)


class DenseBlock(nn.Module):
    def __init__(self, cin: int, cout: int, batch_norm: bool, residual: bool):
        super().__init__()
        self.fc1, self.fc2 = linear_bn(cin, cout, batch_norm), linear_bn(cout, cout, batch_norm)
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if cin == cout else nn.Linear(cin, cout, bias=False)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        z = self.fc2(F.relu(self.fc1(a)))
        return F.relu(z if self.shortcut is None else z + self.shortcut(a))


def split_blocks(k: int, stages: int) -> list[int]:
    """k blocks spread as evenly as possible over the stages, earlier stages first."""
    return [k // stages + (i < k % stages) for i in range(stages)]


class MLPNet(nn.Module):
    def __init__(self, in_features: int, num_classes: int, blocks: int, widths: Sequence[int],
                 batch_norm: bool, residual: bool):
        super().__init__()
        self.stem = linear_bn(in_features, widths[0], batch_norm)
        layers, cin = [], widths[0]
        for width, count in zip(widths, split_blocks(blocks, len(widths))):
            for _ in range(count):
                layers.append(DenseBlock(cin, width, batch_norm, residual))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(F.relu(self.stem(torch.flatten(x, 1)))))
