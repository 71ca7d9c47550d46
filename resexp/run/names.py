"""Run folder names: <arch>-<depth>-s<seed>, then -KEY=VALUE for each other setting the
run's sweep varies (docs/results-format.md). They are written and read back here only;
resexp.run.folder re-exports them.
"""

from __future__ import annotations

import re

from resexp.errors import UserError

# <arch>-<depth>-s<seed>, then -KEY=VALUE for each further setting a sweep varies (its
# extra axes, by key): plain-20-s0, mlp_plain-30-s0, resnet-56-s1-lr=0.05-model.shortcut=B.
# An arch may hold underscores but no dash; a key is a config key, written without
# "train." for the train section's; a value is written as in an override (run_axis_text).
AXIS_KEY = r"[a-z_][a-z0-9_.]*"
AXIS_VALUE = r"[A-Za-z0-9_.+,\[\]-]+"
RUN_NAME = re.compile(r"^(?P<arch>[A-Za-z0-9_]+)-(?P<depth>\d+)-s(?P<seed>\d+)"
                      rf"(?P<axes>(?:-{AXIS_KEY}={AXIS_VALUE})*)$")
MAX_NAME_BYTES = 255  # the longest file name ext4, APFS, NTFS and most others take


def run_name(arch: str, depth: int, seed: int, axes: dict | None = None) -> str:
    """The folder name of a run; ``axes``: {config key: value} of the other settings its
    sweep varies (UserError for a value no folder name can hold: run_axis_text)."""
    name = f"{arch}-{depth}-s{seed}" + "".join(f"-{run_axis_text(k, v)}" for k, v in sorted((axes or {}).items()))
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UserError(f"the run folder {name[:60]}... would have a name longer than {MAX_NAME_BYTES} bytes; "
                        f"sweep fewer settings at once")
    return name


def parse_run_name(name: str) -> dict | None:
    """arch, depth, seed and the extra axes' {config key: value} from a run folder's name,
    or None if it is not named like a run."""
    match = RUN_NAME.match(name)
    if match is None:
        return None
    found = {"arch": match["arch"], "depth": int(match["depth"]), "seed": int(match["seed"])}
    for part in re.split(rf"-(?={AXIS_KEY}=)", match["axes"])[1:]:
        key, _, text = part.partition("=")
        found["." in key and key or f"train.{key}"] = _axis_value(text)
    return found


def run_axis_text(key: str, value) -> str:
    """``KEY=VALUE`` as a run folder's name holds a setting: the key without "train." for
    the train section's (lr=0.05), the value as an override writes it (0.05, 1e-05, true,
    null, B, [16,32,64]). UserError for one that would not read back as itself, or holds a
    character a file name should not (a path, a space, '=')."""
    short = key[len("train."):] if key.startswith("train.") and "." not in key[len("train."):] else key
    text = value_text(value)
    if text is None or not re.fullmatch(AXIS_VALUE, text) or _axis_value(text) != value \
            or type(_axis_value(text)) is not type(value) or not re.fullmatch(AXIS_KEY, short):
        raise UserError(f"{key}={value!r} cannot be written in a run folder's name (letters, digits and . _ + - , [ ] "
                        f"only), so it cannot be a sweep axis; use one --out per value")
    return f"{short}={text}"


def value_text(value) -> str | None:
    """A config value as an override writes it (0.05, 1e-05, true, null, B, [16,32,64]);
    None for one that is neither a scalar nor a flat list of scalars."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return repr(value) if isinstance(value, float) else str(value)  # repr: the shortest exact text
    if isinstance(value, list):
        items = [value_text(v) for v in value]
        return None if None in items or any(isinstance(v, list) for v in value) else f"[{','.join(items)}]"
    return None


NUMBER = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)(e[+-]?\d+)?")


def _axis_value(text: str):
    """A value as run_axis_text wrote it: null, true/false, an int, a float, a list, else text."""
    if text.startswith("[") and text.endswith("]"):
        return [_axis_value(t) for t in text[1:-1].split(",")] if text != "[]" else []
    constants = {"null": None, "true": True, "false": False}
    if text in constants:
        return constants[text]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return float(text) if NUMBER.fullmatch(text) else text
