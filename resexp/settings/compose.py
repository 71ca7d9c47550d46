"""Compose the run config with Hydra, check it, and turn mistakes into one line.

typer parses the command line; the trailing ``key=value`` arguments go to Hydra's
compose API, so the two never both parse argv. The overrides are read with Hydra's
own parser first: sweep syntax, deletions and added keys are refused here with a
clear line, and a run length given in one unit clears the other (schema.py).
Composition against the typed schema (resexp/settings/schema.py) rejects unknown keys and
wrong types; ``validate`` then checks ranges and the rules that span several keys.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Sequence

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
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
    """The configs/ folder shipped with the package (the repo's configs/ when editable,
    or when the source tree is used uninstalled, e.g. with PYTHONPATH)."""
    try:
        return Path(str(resources.files("resexp.configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


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


def config_groups() -> list[str]:
    """The config groups (dataset, experiment, ...): the shipped config folder's subfolders."""
    return sorted(p.name for p in shipped_config_dir().iterdir() if p.is_dir() and not p.name.startswith("_"))


# --------------------------------------------------------------------------- overrides
def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    """Hydra's own reading of ``key=value`` arguments; a malformed one is one line."""
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(str(err).splitlines()[0]) from None


def _value_str(o: Override) -> str:
    return o.get_value_element_as_str()


def prepare_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides to compose, after refusing what a single run cannot use and
    clearing the other unit of a run length the user gave (train.epochs=1 means one
    epoch, whatever ``train.iterations`` an experiment set)."""
    given = {o.key_or_group: o for o in parse_overrides(overrides)}  # a later one of a key wins
    groups = config_groups()
    out = []
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
        if o.is_delete() or (k in groups and o.value() is None):
            if k != "experiment":
                raise UserError(f"{o.input_line}: {k} cannot be removed; set it to another value")
            out.append("~experiment")  # experiment=null: the bare train.yaml
            continue
        if (o.is_add() or o.is_force_add()) and not k.startswith(tuple(d + "." for d in FREE_DICTS)):
            raise UserError(f"unknown config key '{k}' ('+' adds keys only under "
                            f"{' and '.join(FREE_DICTS)})")
        partner = schema.exclusive_partner(k)
        if partner and o.value() is not None:
            other = given.get(partner)
            if other is not None and other.value() is not None:
                raise UserError(f"{k} and {partner} are both set; give the run length in one unit")
            if other is None:
                out.append(f"{partner}=null")
        out.append(o.input_line)
    return out


def merge_overrides(saved: Sequence[str], new: Sequence[str]) -> list[str]:
    """``saved`` with ``new`` applied: an override of the same key (or of a key's
    exclusive partner, e.g. train.epochs for train.iterations) replaces the saved one."""
    new_keys = {o.key_or_group for o in parse_overrides(new)}
    replaced = new_keys | {p for p in map(schema.exclusive_partner, new_keys) if p}
    kept = [o.input_line for o in parse_overrides(saved) if o.key_or_group not in replaced]
    return kept + list(new)


# --------------------------------------------------------------------------- compose
def one_line(err: Exception) -> str:
    """Hydra's and OmegaConf's multi-line messages, cut to what a user needs."""
    text, cause = str(err), err.__cause__
    if isinstance(err, MissingConfigException):
        m = re.search(r"Could not find '([^']+)'", text)
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
        what = m.group(1) if m else text.splitlines()[0]
        group = what.split("/")[0]
        avail = f" (available {group}s: {', '.join(options)})" if options else ""
        return f"unknown {group} '{what.split('/', 1)[-1]}'{avail}"
    detail = str(cause) if cause is not None else text
    full_key = re.search(r"full_key: (\S+)", detail)
    if "not in struct" in detail or re.search(r"Key '.*' not in", detail):
        return f"unknown config key '{full_key.group(1) if full_key else detail.splitlines()[0]}'"
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


def load_config(overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """The resolved, validated run config for ``train.yaml`` + ``overrides``. Whether the
    model fits a device is checked where it trains (resexp/models/footprint.py check_fits)."""
    return finish_config(compose_config(overrides, config_dirs))


def compose_config(overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """``train.yaml`` + ``overrides`` composed by Hydra, interpolations not yet resolved and
    nothing validated: finish_config does both. A sweep composes once and sets each run's
    arch, depth and seed on a copy, as Hydra would apply those overrides last."""
    overrides = prepare_overrides(overrides)
    extra = extra_config_dirs(config_dirs)
    overrides += name_for_dataset(overrides, extra)
    make_importable(extra)
    if extra:
        overrides.append("hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra) + "]")
    schema.register()
    GlobalHydra.instance().clear()  # compose may be called many times in one process
    try:
        with initialize_config_dir(config_dir=str(shipped_config_dir()), version_base=None):
            return compose(config_name="train", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise UserError(one_line(err)) from None


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


def experiment_dataset(name: str, dirs: Sequence[Path] = ()) -> str | None:
    """The dataset an experiment picks (``- override /dataset: NAME``), or None."""
    return _dataset_of(experiment_settings(name, dirs))


def _dataset_of(settings: dict) -> str | None:
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
    exp = _value_str(experiment) if experiment is not None else DEFAULT_EXPERIMENT
    settings = experiment_settings(exp, extra_dirs)
    own, new = _dataset_of(settings), _value_str(dataset)
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
    _require(not unknown, f"unknown config key '{unknown[0] if unknown else ''}'")
    schema.check_values(cfg)
    t, ds = cfg.train, cfg.dataset
    check_model(cfg.model)
    _require((t.epochs is None) != (t.iterations is None),
             "set exactly one of train.epochs and train.iterations (the other null)")
    _require(not t.tensorboard or importlib.util.find_spec("tensorboard") is not None,
             "train.tensorboard=true needs the tensorboard package: pip install 'resexp[tensorboard]'")
    _require(not t.wandb or importlib.util.find_spec("wandb") is not None,
             "train.wandb=true needs the wandb package: pip install 'resexp[wandb]'")
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
