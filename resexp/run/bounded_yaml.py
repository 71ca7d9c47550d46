"""YAML read from a results folder, with bounded size.

``yaml.safe_load`` runs no code, but it keeps aliases as shared objects: 2 KB of
nested ``&a [*b, *b, ...]`` parse in microseconds into a value that, written out or
walked key by key (as OmegaConf and the config checks do), has billions of nodes.
resexp itself never writes anchors, so a file is refused unless its size and the
size and nesting of its value with every alias expanded are small: whatever reads it
next may walk it recursively.
"""

from __future__ import annotations

import yaml

MAX_BYTES = 1 << 20          # a run config is a few KB
MAX_NODES = 100_000          # expanded; a run config has a few hundred
MAX_DEPTH = 32               # nesting, aliases expanded; a run config nests 3 levels
# libyaml's parser where PyYAML has it (its wheels do): the same nodes, eight times faster than the
# pure-Python one (0.33 ms and 2.7 ms per run config), and it refuses nesting past 1,000 levels itself.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TooLarge(ValueError):
    """The YAML is larger than a settings file can be."""


def _expanded_size(node, memo: dict) -> tuple[int, int]:
    """(nodes, nesting depth) of ``node`` with every alias expanded (a shared node counts
    at each use, and a chain of aliases nests as deep as it expands)."""
    key = id(node)
    if key in memo:
        if memo[key] is None:  # a node inside itself (a recursive alias)
            raise TooLarge("it refers to itself")
        return memo[key]
    memo[key] = None
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    total, depth = 1, 1
    for child in children:
        size, below = _expanded_size(child, memo)
        total, depth = total + size, max(depth, below + 1)
        if total > MAX_NODES:
            raise TooLarge(f"it expands to more than {MAX_NODES} values (YAML aliases)")
        if depth > MAX_DEPTH:
            raise TooLarge(f"it is nested more than {MAX_DEPTH} levels deep")
    memo[key] = total, depth
    return total, depth


def load(text: str):
    """``yaml.safe_load(text)``, or TooLarge (or yaml.YAMLError) for what a settings file
    cannot be."""
    if len(text) > MAX_BYTES:
        raise TooLarge(f"it is larger than {MAX_BYTES // 1024} KB")
    loader = LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {})
        return loader.construct_document(node)
    except RecursionError:
        raise TooLarge("it is nested too deeply") from None
    except yaml.MarkedYAMLError as err:
        if "maximum nesting depth" in str(err.problem):  # libyaml's own limit
            raise TooLarge("it is nested too deeply") from None
        raise
    finally:
        loader.dispose()
