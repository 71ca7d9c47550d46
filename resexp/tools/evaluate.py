"""`resexp eval RUN_DIR [OVERRIDES]`: a trained run's checkpoint, evaluated again.

The run's own config.yaml (with today's defaults for keys added since it was written)
plus the overrides: ``dataset=NAME`` swaps in another dataset config,
``dataset.test_subset=null`` evaluates the whole test set, ``train.device=cpu``
another device. The errors come from the same function as the run's metrics rows
(train.evaluate: eval-mode BN, no augmentation), so on the same device, precision
and thread count the test error equals the run's last row exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from resexp.analysis.results import parse_run_name
from resexp.errors import UserError
from resexp.run.folder import RunDir
from resexp.settings import trust
from resexp.settings.compose import load_config, validate


def _parse(overrides: Sequence[str]):
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(f"malformed override: {str(err).splitlines()[0]}") from err
    for o in parsed:
        if o.is_add() or o.is_delete() or o.is_force_add():
            raise UserError(f"resexp eval takes key=value overrides of existing keys, got {o.input_line!r}")
    return parsed


def _plain(cfg) -> DictConfig:
    """An untyped copy: a saved run config holds values a newer schema may type differently."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def _saved_dataset(saved: dict, config_dirs, where: Path) -> DictConfig:
    """The run's own dataset section (no other dataset's keys), over today's config of the
    same dataset, for keys added since the run was made. Where its files are and which
    class reads them are the user's config's, never the saved file's (settings.trust)."""
    try:
        if not trust.is_option_name(saved.get("name")):
            raise UserError("not a dataset name")
        base = _plain(load_config([f"dataset={saved.get('name')}"], config_dirs).dataset)
    except UserError:  # a dataset config that is gone, or a name that is none
        base = None
    own = trust.own_dataset_keys(saved, None if base is None else OmegaConf.to_container(base), where)
    for args in ("train_args", "test_args"):  # the class's arguments are the run's, whole
        if args in own:
            base.pop(args, None)
    return OmegaConf.merge(base, own)


def eval_config(run_dir: Path, overrides: Sequence[str] = (), config_dirs=()) -> DictConfig:
    """The config to evaluate ``run_dir`` with (see the module docstring)."""
    run = RunDir(run_dir)
    saved = run.read_config()  # DamagedFile (one line) if it does not parse
    if saved is None:
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
    parsed = _parse(overrides)
    cfg = OmegaConf.merge(_plain(load_config([], config_dirs)),
                          OmegaConf.create({k: v for k, v in saved.items() if k != "dataset"}))
    cfg.dataset = _saved_dataset(saved.get("dataset") or {}, config_dirs, run.config)
    for o in parsed:  # a whole config group first, then single keys on top of it
        if o.key_or_group == "dataset":
            cfg.dataset = _plain(load_config([f"dataset={o.value()}"], config_dirs).dataset)
    OmegaConf.set_struct(cfg, True)
    for o in parsed:
        if o.key_or_group != "dataset":
            try:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=False)
            except OmegaConfBaseException:
                raise UserError(f"unknown config key '{o.key_or_group}'") from None
    OmegaConf.set_struct(cfg, False)
    validate(cfg)
    return cfg


def evaluate_run(run_dir, overrides: Sequence[str] = (), train: bool = True, config_dirs=()) -> dict:
    """Test error (and clean training error) of the run's checkpoint: a dict for printing. Where
    the dataset has no test split, the held-out training images' error, as val (Data.evaluated_on)."""
    from resexp.train import checkpoint
    from resexp.train.loop import evaluate, setup

    run_dir = Path(run_dir)
    cfg = eval_config(run_dir, overrides, config_dirs)
    run = RunDir(run_dir)
    if not run.checkpoint.exists():
        raise UserError(f"{run.checkpoint} does not exist (kept only with train.keep_checkpoint=true); "
                        "nothing to evaluate")
    s = setup(cfg)
    state = checkpoint.load(run, map_location=s.step.device)
    try:
        s.model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"{run.checkpoint} does not fit this model on dataset {cfg.dataset.name} "
                        f"({type(err).__name__})") from err
    result = {"run": run_dir.name, **(parse_run_name(run_dir.name) or {}), "dataset": cfg.dataset.name,
              "epoch": state.get("epoch"), "iteration": state.get("iteration"),
              "evaluated_on": s.data.evaluated_on, f"{s.data.evaluated_on}_images": len(s.data.test)}
    result[f"{s.data.evaluated_on}_loss"], result[f"{s.data.evaluated_on}_err"] = evaluate(cfg, s, s.data.test)
    if train:
        result["train_images"] = len(s.data.train)
        result["clean_train_loss"], result["clean_train_err"] = evaluate(cfg, s, s.data.train)
    return result


def format_result(r: dict) -> str:
    held = r["evaluated_on"]
    where = " held-out training" if held == "val" else ""
    line = (f"{r['run']} (epoch {r['epoch']}, {r['dataset']}): {held} err {r[f'{held}_err']:.2f}% "
            f"loss {r[f'{held}_loss']:.4f} on {r[f'{held}_images']}{where} images")
    if "clean_train_err" in r:
        line += (f" | clean train err {r['clean_train_err']:.2f}% loss {r['clean_train_loss']:.4f} "
                 f"on {r['train_images']} images (eval mode, no augmentation)")
    return line
