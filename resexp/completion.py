"""Shell completion of the trailing KEY=VALUE overrides (typer completes commands and options).

`resexp --install-completion` installs typer's script for bash, zsh, fish or PowerShell;
the script calls back into resexp with the words typed so far. An override completes as:

- a key: the config groups (``dataset=``, ``experiment=``, ``launcher=``) and every
  schema key (``train.lr=``, ``model.depth=``...), each ending in ``=``;
- a value: a group's options (the shipped ones and those of ``--config-dir`` folders),
  the registered architectures for ``model.arch``, true/false for a switch, a key's
  fixed choices (``model.shortcut=A|B``).

Bash splits ``dataset=fa`` at the ``=`` (COMP_WORDBREAKS): then the words so far end in
``dataset`` ``=`` and only the value is completed, which is what bash inserts.
"""

from __future__ import annotations

from typing import Sequence


def _choices(key: str, config_dirs: Sequence[str]) -> list[str]:
    """The values ``key`` can take, where they are a short list; [] for free values."""
    from resexp.models import list_models
    from resexp.settings import schema
    from resexp.settings.compose import config_groups, list_group

    if key in config_groups():
        names = list_group(key, config_dirs)
        return [*names, "null"] if key == "experiment" else names
    field = schema.leaf_fields().get(key)
    if field is None:
        return []
    check = field.metadata.get("check")
    if isinstance(check, tuple):
        return list(check)
    if check == "arch":
        return list_models()
    if check == "diagnostics":
        return list(schema.DIAGNOSTICS)
    if field.type in (bool, "bool"):
        return ["true", "false"]
    return []


def _keys() -> list[str]:
    from resexp.settings import schema
    from resexp.settings.compose import config_groups

    return [f"{g}=" for g in config_groups()] + [f"{k}=" for k in schema.leaf_fields()]


def complete_words(before: Sequence[str], incomplete: str, config_dirs: Sequence[str] = ()) -> list[str]:
    """Completions of the override being typed (``incomplete``), given the overrides typed
    before it and the --config-dir folders."""
    try:
        if before[-2:-1] and before[-1] == "=":  # bash: 'dataset' '=' 'fa'
            return [c for c in _choices(before[-2].lstrip("+~"), config_dirs) if c.startswith(incomplete)]
        if "=" in incomplete:
            key, _, typed = incomplete.partition("=")
            return [f"{key}={c}" for c in _choices(key.lstrip("+~"), config_dirs) if c.startswith(typed)]
        return [k for k in _keys() if k.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - a completion must never print a traceback into the shell
        return []


def complete_override(ctx, incomplete: str) -> list[str]:
    """typer's autocompletion hook: the words parsed so far are in ``ctx.params``."""
    return complete_words([str(w) for w in ctx.params.get("overrides") or []], incomplete,
                          [str(d) for d in ctx.params.get("config_dir") or []])
