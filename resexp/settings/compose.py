"""Compose the run config with Hydra, check it, and turn mistakes into one line.

typer parses the command line; the trailing ``key=value`` arguments go to Hydra's
compose API, so the two never both parse argv. The overrides are read with Hydra's
own parser first and checked against the schema, as Hydra's grammar means them
(``key=value``, ``+key=value`` where the schema takes new keys, ``++key=value``,
``~key``, ``group=option`` and ``+group=option``); each misuse is one line naming its
key, with the nearest known keys for a typo. A run length given in one unit clears the
other (schema.py).
Composition against the typed schema (resexp/settings/schema.py) rejects unknown keys and
wrong types; ``validate`` then checks ranges and the rules that span several keys.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from resexp.errors import UserError
from resexp.models.registry import check_model
from resexp.settings import schema, trust

# train.yaml's default experiment (experiment=NAME picks another, experiment=null none).
DEFAULT_EXPERIMENT = "he2016_cifar10"

# Free-form dicts: keyword arguments of the dataset class (which rejects one it does not
# take) and extra sbatch options (which sbatch checks): the only places where
# `+key=value` may add a key.
FREE_DICTS = ("dataset.train_args", "dataset.test_args", "launcher.sbatch")


def shipped_config_dir() -> Path:
    """The configs/ folder shipped inside the package (the repo's configs/ links to it)."""
    return Path(__file__).resolve().parents[1] / "configs"


def extra_config_dirs(config_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """User config folders (``--config-dir`` and $RESEXP_CONFIG_DIR, ':'-separated),
    searched after the shipped one: a new dataset is one YAML file there."""
    env = [p for p in os.environ.get("RESEXP_CONFIG_DIR", "").split(os.pathsep) if p]
    dirs = [Path(p).expanduser().resolve() for p in [*config_dirs, *env]]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"config folder {d} does not exist")
    return dirs


# User config folders load_config made importable (a dataset class beside its YAML file);
# a SLURM job makes them importable again where it runs (sweep/slurm.py TrainJob).
_CODE_DIRS: list[str] = []


def make_importable(dirs: Sequence[str | Path]) -> None:
    """Modules in the user's config folders import like installed ones (``_target_:
    mydata.MyDataset`` for a mydata.py beside dataset/mydata.yaml). Appended to sys.path,
    so an installed module of the same name still wins."""
    for d in map(str, dirs):
        if d not in sys.path:
            sys.path.append(d)
        if d not in _CODE_DIRS:
            _CODE_DIRS.append(d)


def importable_dirs() -> list[str]:
    """The config folders make_importable added in this process."""
    return list(_CODE_DIRS)


def config_groups(extra_dirs: Sequence[Path] = ()) -> list[str]:
    """The config groups (dataset, experiment, ...): the folders of YAML files in the shipped
    config folder and in ``extra_dirs`` (the user's, from extra_config_dirs)."""
    return sorted({p.name for d in [shipped_config_dir(), *extra_dirs] for p in d.iterdir()
                   if p.is_dir() and not p.name.startswith(("_", ".")) and any(p.glob("*.yaml"))})


@functools.lru_cache(maxsize=1)
def default_options() -> dict[str, str | None]:
    """The groups train.yaml's defaults list names, each with its default option (None:
    the group is there to be picked, ``model=resnet_b``, but nothing is picked by default).
    Any other group has no place in the list, and its option is added: ``+group=option``."""
    defaults = yaml.safe_load((shipped_config_dir() / "train.yaml").read_text())["defaults"]
    return {k: v for item in defaults if isinstance(item, dict) for k, v in item.items()}


# --------------------------------------------------------------------------- overrides
def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    """Hydra's own reading of ``key=value`` arguments; a malformed one is one line."""
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(str(err).splitlines()[0]) from None


def _sections() -> set[str]:
    return {k.rsplit(".", i)[0] for k in schema.leaf_fields() for i in range(1, k.count(".") + 1)}


def _in_free_dict(key: str) -> bool:
    return key.startswith(tuple(d + "." for d in FREE_DICTS))


def unknown_key(key: str, groups: Sequence[str] = (), note: str = "") -> str:
    """The line for a key the schema does not have, with the nearest known one (a typo is usually one)."""
    close = difflib.get_close_matches(key, [*schema.leaf_fields(), *_sections(), *groups], n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    if "." not in key and groups:
        return f"unknown config group or key '{key}' (groups: {', '.join(groups)}){hint}"
    return f"unknown config key '{key}'{note}{hint}"


def _group_override(o: Override) -> str:
    """A config group's option: ``group=option`` where train.yaml names the group,
    ``+group=option`` where it does not, as in Hydra; ``~group`` (or ``group=null``) drops
    the pick where the group's keys all have defaults (every dataset key has none)."""
    k, defaults = o.key_or_group, default_options()
    if o.is_delete() or o.value() is None:
        if any(schema.default_of(leaf) is schema.NO_DEFAULT for leaf in _leaves_under(k)):
            raise UserError(f"{o.input_line}: {k} cannot be removed; pick another with {k}=NAME")
        if k not in defaults:
            raise UserError(f"{o.input_line}: no {k} is picked, so none can be removed")
        return o.input_line if o.is_delete() else f"~{k}"
    if o.is_force_add():
        return f"{'' if k in defaults else '+'}{o.input_line[2:]}"
    if o.is_add() and k in defaults:
        raise UserError(f"{o.input_line}: {k} already has a place in train.yaml's defaults "
                        f"(default {defaults[k] or 'none'}); pick another with {o.input_line[1:]}")
    if not o.is_add() and k not in defaults:
        raise UserError(f"{o.input_line}: {k} has no default to override; add one with +{o.input_line}")
    return o.input_line


def _value_override(o: Override, groups: Sequence[str]) -> str | None:
    """A key's override as Hydra should apply it (None: a removal, done after composing):
    ``key=value`` sets a schema key, ``++key=value`` too, ``+key=value`` adds a key where
    the schema allows new keys (FREE_DICTS), ``~key`` is applied by remove_keys."""
    k, free = o.key_or_group, _in_free_dict(o.key_or_group)
    known = k in schema.leaf_fields() or k in _sections()  # a leaf (train.lr) or a section (train, dataset.augment)
    if not (known or free):
        where = f"{', '.join(FREE_DICTS[:-1])} and {FREE_DICTS[-1]}"
        note = f" ('+' adds keys only under {where})" if o.is_add() or o.is_force_add() else ""
        raise UserError(unknown_key(k, groups, note))
    if o.is_delete():
        required = [leaf for leaf in _leaves_under(k) if schema.default_of(leaf) is schema.NO_DEFAULT]
        if required:
            raise UserError(f"{o.input_line}: {required[0]} has no default to go back to; set it with "
                            f"{required[0]}=...")
        return None
    if o.is_add() and known:
        raise UserError(_set_already(o.input_line, k))
    if k in FREE_DICTS and not (o.is_add() or o.is_force_add()):
        return f"++{o.input_line}"  # new entries merged into the dict, as into any unstructured one
    return o.input_line[2:] if o.is_force_add() and known else o.input_line


def _set_already(line: str, key: str) -> str:
    return f"{line}: {key} is set already; set it with {line[1:]} ('++' sets a key whether or not it is there)"


def _leaves_under(key: str) -> list[str]:
    return [leaf for leaf in schema.leaf_fields() if leaf == key or leaf.startswith(key + ".")]


def prepare_overrides(overrides: Sequence[str], extra_dirs: Sequence[Path] = ()) -> tuple[list[str], list[Override]]:
    """The overrides to compose and the removals (``~key``) to apply after it, once what a
    single run cannot use is refused and the other unit of a run length the user gave is
    cleared (train.epochs=1 means one epoch, whatever ``train.iterations`` an experiment set).
    Each misuse of Hydra's grammar is one line naming its key."""
    given = {o.key_or_group: o for o in parse_overrides(overrides)}  # a later one of a key wins
    groups = config_groups(extra_dirs)
    out, removals = [], []
    for o in given.values():
        k = o.key_or_group
        if not k:
            raise UserError(f"{o.input_line!r}: an override is key=value and needs a key")
        if k.startswith("hydra/launcher"):
            raise UserError(f"{o.input_line}: resexp's own launchers do that: --launcher slurm (or launcher=slurm) "
                            f"on resexp sweep (docs/hydra.md)")
        if k.split(".")[0].split("/")[0] == "hydra":  # hydra.job.chdir, hydra/sweeper, ...: how Hydra runs
            raise UserError(f"{o.input_line}: Hydra's own settings are not run settings "
                            f"(config folders: --config-dir)")
        if o.is_sweep_override():
            raise UserError(f"{o.input_line}: sweep syntax (several values) is for `resexp sweep`")
        line = _group_override(o) if k in groups else _value_override(o, groups)
        if line is None:
            removals.append(o)
            continue
        partner = schema.exclusive_partner(k)
        if partner and o.value() is not None:
            other = given.get(partner)
            if other is not None and other.value() is not None and not other.is_delete():
                raise UserError(f"{k} and {partner} are both set; give the run length in one unit")
            if other is None:
                out.append(f"{partner}=null")
        out.append(line)
    return out, removals


def remove_keys(cfg: DictConfig, removals: Sequence[Override]) -> None:
    """``~key``: the key back to its schema default (a section: each key in it), or an entry
    of a free dict (dataset.train_args...) deleted. ``~key=value`` only while it has that value."""
    for o in removals:
        k = o.key_or_group
        current = OmegaConf.select(cfg, k, default=_ABSENT)
        if current is _ABSENT:
            raise UserError(f"{o.input_line}: {k} is not set, so it cannot be removed")
        if o.value() is not None and _plain(current) != o.value():
            raise UserError(f"{o.input_line}: {k} is {_plain(current)!r}, not {o.value()!r}, so it is kept")
        if _in_free_dict(k):
            parent, _, last = k.rpartition(".")
            with open_dict(cfg):
                del OmegaConf.select(cfg, parent)[last]
            continue
        for leaf in _leaves_under(k):
            OmegaConf.update(cfg, leaf, schema.default_of(leaf), merge=False)


_ABSENT = object()


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def merge_overrides(saved: Sequence[str], new: Sequence[str]) -> list[str]:
    """``saved`` with ``new`` applied: an override of the same key (or of a key's
    exclusive partner, e.g. train.epochs for train.iterations) replaces the saved one."""
    new_keys = {o.key_or_group for o in parse_overrides(new)}
    replaced = new_keys | {p for p in map(schema.exclusive_partner, new_keys) if p}
    kept = [o.input_line for o in parse_overrides(saved) if o.key_or_group not in replaced]
    return kept + list(new)


# --------------------------------------------------------------------------- compose
def one_line(err: Exception, extra_dirs: Sequence[Path] = ()) -> str:
    """Hydra's, OmegaConf's and YAML's multi-line messages, cut to what a user needs; a
    mistake inside a config file names the file."""
    if isinstance(err, yaml.YAMLError):
        mark = getattr(err, "problem_mark", None)
        where = f"{_as_typed(Path(mark.name))} line {mark.line + 1}" if mark else "a config file"
        return f"{where} is not valid YAML: {getattr(err, 'problem', None) or err}"
    text, cause = str(err), err.__cause__
    if isinstance(err, MissingConfigException):
        m = re.search(r"Could not find '([^']+)'", text)
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
        what = m.group(1) if m else text.splitlines()[0]
        group = what.split("/")[0]
        avail = f" (available {group}s: {', '.join(sorted(options))})" if options else ""
        return f"unknown {group} '{what.split('/', 1)[-1]}'{avail}"
    m = re.match(r"In '([^']+/[^']+)': ", text)
    # a file's unknown key is only a key: the groups are for the command line
    line = _cut(text, str(cause) if cause is not None else text, () if m else config_groups(extra_dirs))
    if m:  # a group's file, e.g. In 'optim/fast': ... while composing config
        path = _config_file(m.group(1), extra_dirs)
        return f"{path}: {line}{_package_hint(path, m.group(1), line)}"
    return line


def _cut(text: str, detail: str, groups: Sequence[str]) -> str:
    m = re.search(r"An item is already at '(\S+)'\.\nEither remove \+ prefix: '([^']+)'", text)
    if m:  # +key=value of an entry a free dict has
        return _set_already(f"+{m[2]}", m[1])
    m = re.search(r"Could not override '(\S+)'\.\nTo append to your config use (\S+)", text)
    if m:  # a new entry of a free dict
        return f"{m[1]} is not set yet; add it with {m[2]}"
    full_key = re.search(r"full_key: (\S+)", detail)
    if "not in struct" in detail or re.search(r"Key '.*' not in", detail):
        return unknown_key(full_key.group(1) if full_key else detail.splitlines()[0], groups)
    m = (re.search(r"Value '(.*?)' (?:of type '\w+' )?could not be converted to (\w+)", detail)
         or re.search(r"Value '(.*?)' is not a valid (bool)", detail)
         or re.search(r"Invalid value assigned: (\w+) is not a (ListConfig)", detail))
    if m and full_key:
        kind = {"Integer": "an integer", "Float": "a number", "bool": "true or false",
                "ListConfig": "a list, e.g. [1,2]"}.get(m[2], m[2])
        return f"{full_key.group(1)} must be {kind}, got {m[1]!r}"
    m = re.search(r"Error merging override (\S+)", text)
    first = detail.splitlines()[0]
    return f"{m.group(1)}: {first}" if m else "; ".join(
        ln for ln in text.splitlines()[:2] if ln.strip() and not ln.startswith("See https"))


def _config_file(option: str, extra_dirs: Sequence[Path]) -> Path | str:
    """Where Hydra read ``group/option`` from: the first config folder that has it, as the
    user would type it (relative to the current folder where it is below it)."""
    found = [d / f"{option}.yaml" for d in [shipped_config_dir(), *extra_dirs] if (d / f"{option}.yaml").is_file()]
    return _as_typed(found[0]) if found else f"{option}.yaml"


def _as_typed(path: Path) -> Path:
    """``path`` relative to the current folder where it is below it, as a user would type it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _package_hint(path: Path | str, option: str, line: str) -> str:
    """Why a group file's keys landed under its group's name (optim.lr for optim/fast.yaml):
    it has no ``# @package`` header, or the header is not its first line, where Hydra reads it."""
    group = option.split("/")[0]
    if f"'{group}'" not in line and f"'{group}." not in line:
        return ""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    if "@package" in text:
        return " (its '# @package' line must be the file's first line)"
    return f" (a file of group {group} sets keys under {group}. unless its first line is '# @package train' or " \
           f"'# @package _global_')"


def load_config(overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """The resolved, validated run config for ``train.yaml`` + ``overrides``. Whether the
    model fits a device is checked where it trains (resexp/models/footprint.py check_fits)."""
    return finish_config(compose_config(overrides, config_dirs))


def compose_config(overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """``train.yaml`` + ``overrides`` composed by Hydra, interpolations not yet resolved and
    nothing validated: finish_config does both. A sweep composes once and sets each run's
    arch, depth and seed on a copy, as Hydra would apply those overrides last."""
    extra = extra_config_dirs(config_dirs)
    overrides, removals = prepare_overrides(overrides, extra)
    overrides += name_for_dataset(overrides, extra)
    make_importable(extra)
    if extra:
        overrides.append("hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra) + "]")
    GlobalHydra.instance().clear()  # compose may be called many times in one process
    try:
        with initialize_config_dir(config_dir=str(shipped_config_dir()), version_base=None):
            cfg = compose(config_name="train", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise UserError(one_line(err, extra)) from None
    remove_keys(cfg, removals)
    return cfg


def finish_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` (from compose_config) resolved in place and validated."""
    try:
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(one_line(err)) from None
    validate(cfg)
    return cfg


def experiment_settings(name: str, dirs: Sequence[Path] = ()) -> dict:
    """An experiment file's own YAML (configs/experiment/NAME.yaml, shipped folder first),
    or {} when there is no such file or it is not a mapping (composing it says why)."""
    for d in [shipped_config_dir(), *dirs]:
        path = d / "experiment" / f"{name}.yaml"
        if path.is_file():
            try:
                config = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                return {}
            return config if isinstance(config, dict) else {}
    return {}


def experiment_dataset(settings: dict) -> str | None:
    """The dataset an experiment's own YAML (experiment_settings) picks (``- override
    /dataset: NAME``), or None."""
    defaults = settings.get("defaults")
    for item in defaults if isinstance(defaults, list) else []:
        if isinstance(item, dict) and isinstance(item.get("override /dataset"), str):
            return item["override /dataset"]
    return None


def name_for_dataset(overrides: Sequence[str], extra_dirs: Sequence[Path] = ()) -> list[str]:
    """``[name=...]`` when the command line moves an experiment to another dataset and
    does not name the study itself: he2016_cifar10 with dataset=fashion_mnist is
    he2016_fashion_mnist, quick_fashion with dataset=mnist is quick_fashion_on_mnist. Its
    default results folder, report title and figure subtitles then say what was trained."""
    given = {o.key_or_group: o for o in parse_overrides(overrides)}
    dataset, experiment = given.get("dataset"), given.get("experiment")
    if dataset is None or "name" in given or (experiment is not None and experiment.is_delete()):
        return []
    exp = experiment.get_value_element_as_str() if experiment is not None else DEFAULT_EXPERIMENT
    settings = experiment_settings(exp, extra_dirs)
    own, new = experiment_dataset(settings), dataset.get_value_element_as_str()
    if own is None or new == own or not trust.is_option_name(new):
        return []
    name = str(settings.get("name", exp))
    return [f"name={name[:-len(own)]}{new}" if name.endswith(f"_{own}") else f"name={name}_on_{new}"]


def list_group(group: str, config_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Names of the options of a config group (e.g. every dataset), user folders included."""
    names = set()
    for d in [shipped_config_dir(), *extra_config_dirs(config_dirs)]:
        names.update(p.stem for p in (d / group).glob("*.yaml"))
    return sorted(names)


# --------------------------------------------------------------------------- validate
def _leaves(node, prefix=""):
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict) and full not in FREE_DICTS:
            yield from _leaves(v, full + ".")
        else:
            yield full


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: DictConfig) -> None:
    """Every rule of a run config; the first one broken is one UserError line."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    _require(not missing, f"{missing[0] if missing else ''} has no value: set it in the YAML "
                          f"or on the command line")
    known = set(schema.leaf_fields())
    unknown = [k for k in _leaves(OmegaConf.to_container(cfg)) if k not in known]
    _require(not unknown, unknown_key(unknown[0]) if unknown else "")
    schema.check_values(cfg)
    t, ds = cfg.train, cfg.dataset
    check_model(cfg.model)
    _require((t.epochs is None) != (t.iterations is None),
             "set exactly one of train.epochs and train.iterations (the other null)")
    _require(not t.tensorboard or importlib.util.find_spec("tensorboard") is not None,
             "train.tensorboard=true needs the tensorboard package: pip install 'resexp[tensorboard]'")
    _require(not t.wandb or importlib.util.find_spec("wandb") is not None,
             "train.wandb=true needs the wandb package: pip install 'resexp[wandb]'")
    # a crop of the padded image would be all padding, or nearly
    _require(ds.augment.pad < ds.image_size, f"dataset.augment.pad must be less than dataset.image_size "
                                             f"({ds.image_size}), got {ds.augment.pad} (§4.2: 4 pixels on 32)")
    _require(len(ds.mean) == ds.channels == len(ds.std),
             f"dataset {ds.name}: mean and std need one value per channel ({ds.channels})")
    _require(ds.val_size < ds.train_size,
             f"dataset.val_size={ds.val_size} leaves no training images ({ds.name} has {ds.train_size})")
    usable = ds.train_size - ds.val_size
    _require(ds.train_subset is None or ds.train_subset <= usable,
             f"dataset.train_subset={ds.train_subset} is more than the {usable} training images of {ds.name}")
    _require(ds.test_subset is None or ds.test_subset <= ds.test_size,
             f"dataset.test_subset={ds.test_subset} is more than the {ds.test_size} test images of {ds.name}")


def is_launcher_override(override: str) -> bool:
    """launcher=NAME or launcher.KEY=...: how a sweep trains its runs, never what they are."""
    return override.split("=")[0].lstrip("+~").split(".")[0] == "launcher"
