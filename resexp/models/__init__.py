"""Networks by name: ``get_model("resnet", depth=56, in_channels=3, num_classes=10, ...)``.

Every architecture is a plain ``def`` in archs.py, registered with its options, depth
rule and how figures show it, so a config is checked against it before any data are
loaded. Importing this package does not import torch; building a net does.
"""

from __future__ import annotations

from resexp.models import archs  # noqa: F401  (registers every architecture)
from resexp.models.registry import arch_info, check_model, count_params, get_model, list_models, register_model

__all__ = ["arch_info", "check_model", "count_params", "get_model", "list_models", "register_model"]
