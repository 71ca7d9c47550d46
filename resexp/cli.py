"""The `resexp` command: a thin typer shell over the Python API (resexp/api.py) and plain functions.

typer parses options; trailing KEY=VALUE arguments are Hydra overrides handed to
compose() untouched. A mistake the user can fix prints one line and exits 2.
"""

from __future__ import annotations

import re
import signal
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from resexp import __version__
from resexp.completion import complete_override
from resexp.errors import UserError
from resexp.process import exit_quickly
from resexp.run.text import inert

# rich_markup_mode=None: help texts are shown as written; in rich markup "[default: ...]" is a
# style tag and would vanish from --help.
# add_completion: --install-completion / --show-completion for bash, zsh, fish and PowerShell;
# the overrides complete through resexp/completion.py.
app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Reproduce He et al. 2016's degradation experiment: plain vs residual "
                       "networks across depths.")
OVERRIDES = typer.Argument(None, metavar="[OVERRIDES]...",
                           help="Hydra overrides, e.g. model.depth=56 dataset=fashion_mnist train.epochs=2. "
                                "The default experiment is he2016_cifar10 (the paper's CIFAR-10 recipe); "
                                "experiment=NAME picks another, experiment=null none.",
                           autocompletion=complete_override)
CONFIG_DIR = typer.Option(None, "--config-dir", help="Extra config folder searched after the shipped one "
                          "(also $RESEXP_CONFIG_DIR), e.g. with a new dataset/NAME.yaml.")

CFG = typer.Option(None, "--cfg", "-c", metavar="job|all",
                   help="Print the composed, validated config as YAML and exit, as Hydra's --cfg: job (the "
                        "run's settings) or all (also the launcher section)")

TRAIN_ERROR = typer.Option("minibatch", "--train-error", help="minibatch: the mean minibatch error of the "
                           "last epoch, augmentation on (Fig. 6); clean: the clean training set in eval mode "
                           "(runs trained with train.eval_train=true)")
BEST_BY = typer.Option(None, "--best-by", metavar="METRIC",
                       help="val_err: where the sweep varies a setting besides arch, depth and seed "
                            "(train.lr=0.1,0.05), each (arch, depth) at the value with the lowest final val err, "
                            "mean over seeds (runs trained with dataset.val_size)")


def _folder(value: str) -> Path:
    """--out's folder: an empty one (--out "", a variable that was never set) would be the
    current folder, which nobody asks for that way (--out . does)."""
    if not value.strip():
        raise typer.BadParameter("give a folder (--out . for the current one)")
    return Path(value)


def _show_version(value: bool) -> None:
    if value:
        print(f"resexp {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                          help="Print resexp's version and exit")):
    pass  # the options of `resexp` itself; each command has its own


def _print_cfg(cfg, part: str, about: str = "") -> None:
    """``cfg`` as YAML on stdout (``part``: job leaves out the launcher section), after
    ``about`` as comment lines."""
    from omegaconf import OmegaConf

    if part not in ("job", "all"):
        raise UserError(f"--cfg takes job or all, got {part!r} (resexp composes no Hydra app config)")
    keys = [k for k in cfg if part == "all" or k != "launcher"]
    for line in about.splitlines():
        print(f"# {line}")
    print(OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, keys)), end="")


def _hydra_dir(overrides: list[str], key: str, other: str, out: Optional[Path]) -> tuple[list[str], Optional[Path]]:
    """Hydra's output folder key (hydra.run.dir for train, hydra.sweep.dir for sweep) taken
    as --out: (the other overrides, the folder). ``${now:FORMAT}`` in it is today's date as
    in Hydra; the other command's key is one line saying which to use."""
    import time

    rest, given = [], None
    for o in overrides:
        name, _, value = o.partition("=")
        if name == other:
            raise UserError(f"{o}: this command's results folder is {key}=DIR (or --out DIR)")
        if name != key:
            rest.append(o)
            continue
        value = re.sub(r"\$\{now:([^}]*)\}", lambda m: time.strftime(m[1]), value)
        if not value or "${" in value:
            raise UserError(f"{o}: give a folder (of interpolations only ${{now:FORMAT}} is understood)")
        given = Path(value)
    if given is not None and out is not None and given != out:
        raise UserError(f"--out {out} and {key}={given} name two folders; give one")
    return rest, out or given


@app.command(short_help="Train one network (rerun the same command to resume it).")
def train(overrides: Optional[List[str]] = OVERRIDES,
          out: Optional[Path] = typer.Option(None, "--out", parser=_folder, help="Results folder, also "
                                             "hydra.run.dir=DIR [default: results/<name>]"),
          config_dir: Optional[List[Path]] = CONFIG_DIR,
          cfg_part: Optional[str] = CFG,
          multirun: bool = typer.Option(False, "--multirun", "-m", help="Hydra's multirun: in resexp several "
                                        "runs are `resexp sweep` (same overrides); here one line says so")):
    """Train one network; its run folder is OUT/<arch>-<depth>-s<seed>/ (rerun to resume)."""
    from resexp import api

    if multirun:
        raise UserError("-m/--multirun: several runs are `resexp sweep` with the same overrides "
                        "(e.g. resexp sweep model.depth=20,56,110); train trains one")
    overrides, out = _hydra_dir(list(overrides or []), "hydra.run.dir", "hydra.sweep.dir", out)
    if cfg_part is not None:
        from resexp.settings.compose import load_config

        return _print_cfg(load_config(overrides, config_dir or []), cfg_part)
    signal.signal(signal.SIGTERM, _terminated)
    print(_interruptible(lambda: api.train(overrides, out, config_dirs=config_dir, progress=True)).summary_line())


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill's default), raised where Ctrl-C raises KeyboardInterrupt: `resexp train`
    and `resexp sweep` stop as on Ctrl-C (the run's loggers write their last records and
    close on the way out, a sweep stops its workers) and say the same one line, then exit
    143 (128 + 15, as a shell reports a process that SIGTERM ended) where Ctrl-C exits 130."""


def _terminated(signum, frame) -> None:
    raise Terminated()


@app.command(short_help="Train every (arch, depth, seed) of a sweep; rerun to resume.")
def sweep(overrides: Optional[List[str]] = OVERRIDES,
          depths: Optional[str] = typer.Option(None, "--depths", help="Comma-separated depths, e.g. 20,56,110"),
          archs: Optional[str] = typer.Option(None, "--archs",
                                              help="Comma-separated architectures [default: plain,resnet]"),
          seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds [default: 0]"),
          out: Optional[Path] = typer.Option(None, "--out", parser=_folder, help="Results folder, also "
                                             "hydra.sweep.dir=DIR [default: results/<experiment name>]"),
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and an estimate; train nothing."),
          jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="local launcher: runs trained at once, "
                                             "each in its own process (on a GPU several small nets share it well) "
                                             "[default: launcher.jobs, 1]"),
          launcher: Optional[str] = typer.Option(None, "--launcher", help="local (this machine) or slurm (one job "
                                                 "per run), or a site launcher in --config-dir; the same as "
                                                 "launcher=NAME [default: local]"),
          wait: bool = typer.Option(False, "--wait", help="slurm launcher: follow the jobs until they end "
                                    "instead of returning once they are submitted"),
          config_dir: Optional[List[Path]] = CONFIG_DIR,
          cfg_part: Optional[str] = CFG,
          multirun: bool = typer.Option(False, "--multirun", "-m", help="Accepted as in Hydra: a sweep is "
                                        "always a multirun")):
    """Train every (arch, depth, seed); rerun the same command to skip finished runs and resume the rest.

    The axes also take Hydra's sweep syntax: model.depth=20,56,110 seed=range(0,3)
    model.arch=plain,resnet. With --out DIR of an existing sweep, new overrides extend
    its saved ones. Exit code 1 if a run failed or is left unfinished, 2 if one is damaged
    (see the plan's lines)."""
    from resexp import api

    overrides = [*(overrides or []), *([f"launcher={launcher}"] if launcher else [])]
    overrides, out = _hydra_dir(overrides, "hydra.sweep.dir", "hydra.run.dir", out)
    if cfg_part is not None:
        from resexp.sweep.plan import resolve_spec

        spec, folder = resolve_spec(archs, depths, seeds, overrides, out, config_dir or [])
        first = spec.run_config(spec.archs[0], spec.depths[0], spec.seeds[0])
        return _print_cfg(first, cfg_part, f"sweep into {folder}: archs {','.join(spec.archs)}, depths "
                                           f"{','.join(map(str, spec.depths))}, seeds {','.join(map(str, spec.seeds))}"
                                           f"\nthe config of its first run (model.arch, model.depth and seed "
                                           f"vary):")
    signal.signal(signal.SIGTERM, _terminated)
    outcome = _interruptible(lambda: api.sweep(archs, depths, seeds, overrides, out, config_dirs=config_dir, jobs=jobs,
                                               wait=wait, dry_run=dry_run, progress=True))
    if outcome.statuses is None:  # a dry run, or jobs submitted to SLURM and not followed
        return
    print(outcome.summary_line())
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


@app.command(short_help="The figures: training error vs depth, Fig. 6 curves, Fig. 7.")
def plot(results_dir: Path = typer.Argument(..., help="A sweep's results folder"),
         out: Optional[Path] = typer.Option(None, "--out", help="Figure folder [default: RESULTS_DIR/figures]"),
         format: str = typer.Option("png,pdf", "--format", help="Comma-separated: png, pdf, svg"),
         train_error: str = TRAIN_ERROR,
         zoom: Optional[float] = typer.Option(None, "--zoom", metavar="PCT",
                                              help="End the training curves' error axis at PCT % (above 0, "
                                                   "at most 100), e.g. 20 as in He et al. 2016, Fig. 6 "
                                                   "[default: the full range]"),
         best_by: Optional[str] = BEST_BY):
    """Training error vs number of layers, the paper's Fig. 6 curves and, where the runs hold
    diagnostics, Fig. 7 (layer responses), gradient norms and the identity test (with their CSVs)."""
    from resexp import api

    for path in _said(api.plot, results_dir, out, format, train_error, zoom, best_by).paths:
        print(path)


@app.command(short_help="A Markdown/CSV table of every (arch, depth), beside Table 6.")
def report(results_dir: Path = typer.Argument(..., help="A sweep's results folder"),
           out: Optional[Path] = typer.Option(None, "--out", help="Where report.md/csv go [default: RESULTS_DIR]"),
           train_error: str = TRAIN_ERROR, best_by: Optional[str] = BEST_BY):
    """A Markdown/CSV table of every (arch, depth), beside the paper's Table 6 for CIFAR-10, and
    each depth's gap to the shallowest with a bootstrap interval over seeds."""
    from resexp import api

    print(_said(api.report, results_dir, out, train_error, best_by).markdown)


@app.command(short_help="One line per run of a results folder: how far, which errors.")
def status(results_dir: Path = typer.Argument(..., help="A sweep's results folder")):
    """One line per run: status, epoch k of K, latest training and test error, who trains it
    (and its SLURM job)."""
    from resexp.analysis.results import damage_warnings, format_status, read_results
    from resexp.sweep.status import status_with_jobs

    try:
        runs = read_results(results_dir).runs
    except UserError:  # no run folder yet: the SLURM jobs may still queue
        runs = None
    lines = [] if runs is None else damage_warnings(runs)
    table, logs = status_with_jobs(results_dir, runs, lines)
    for line in lines:
        print(line, file=sys.stderr)
    print(format_status(table))
    if logs:
        print(logs)


def _said(function, *args):
    """``function(*args)`` of resexp.api with each warning it gives (a damaged run or
    diagnostics file) a line on stderr, as every command says them, before its error if it fails."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")  # each time: a test or a notebook may have seen the same line
        try:
            return function(*args)
        finally:
            for warning in said:
                print(warning.message, file=sys.stderr)


@app.command(name="eval", short_help="Evaluate a run's checkpoint (test and clean training error).")
def eval_run(run_dir: Path = typer.Argument(..., help="A run folder, e.g. results/quick_fashion/plain-56-s0"),
             overrides: Optional[List[str]] = OVERRIDES,
             train: bool = typer.Option(True, "--train/--no-train", help="Also the clean training error"),
             config_dir: Optional[List[Path]] = CONFIG_DIR,
             cfg_part: Optional[str] = CFG):
    """Evaluate a run's checkpoint: test error and clean training error (eval mode), optionally
    with overrides such as dataset=mnist or dataset.test_subset=null."""
    from resexp.tools.evaluate import eval_config, evaluate_run, format_result

    if cfg_part is not None:
        return _print_cfg(eval_config(run_dir, overrides or [], config_dir or []), cfg_part,
                          f"the config {run_dir}'s checkpoint is evaluated with")
    print(format_result(evaluate_run(run_dir, overrides or [], train, config_dir or [])))


@app.command(short_help="The configured datasets: on disk or not, in which format.")
def datasets(overrides: Optional[List[str]] = OVERRIDES, config_dir: Optional[List[Path]] = CONFIG_DIR):
    """The configured datasets: whether each is on disk, and in which format (for CIFAR in
    dataset.source: the binary version, archive or extracted folder, and whether it has the
    test file). Overrides apply to each; dataset=NAME lists that one only, e.g.
    `resexp datasets dataset=cifar10 dataset.source=~/cifar`. A dataset whose config or class
    is broken is one line saying why, and the exit code is then 2."""
    from resexp.data import data_root
    from resexp.data.load import found
    from resexp.settings.compose import list_group, load_config

    given = list(overrides or [])
    chosen = [o.split("=", 1)[1] for o in given if o.startswith("dataset=")]
    rest = [o for o in given if not o.startswith("dataset=")]
    broken = 0
    print(f"{'dataset':<16} {'on disk':<9} {'class':<40} {'format':<44} folder")
    for name in chosen or list_group("dataset", config_dir or []):
        try:
            ds = load_config([f"dataset={name}", *rest], config_dir or []).dataset
            (where, form), root = (("generated", "-"), "-") if ds.synthetic else (found(ds), data_root(ds))
        except UserError as err:  # one broken YAML or class: its line, and the others still listed
            broken += 1
            print(f"{name:<16} {'error':<9} {inert(err)}")
            continue
        print(f"{name:<16} {where:<9} {ds['_target_']:<40} {form:<44} {root}")
    if broken:
        raise typer.Exit(2)


@app.command(short_help="Training throughput (images/s) and memory per model on this machine.")
def bench(overrides: Optional[List[str]] = OVERRIDES,
          depths: str = typer.Option("20,56,110", "--depths", help="Comma-separated depths to time"),
          archs: str = typer.Option("plain,resnet", "--archs", help="Comma-separated architectures to time"),
          steps: int = typer.Option(20, "--steps", min=1, help="Timed training steps per model"),
          compile: bool = typer.Option(False, "--compile", help="Also time torch.compile'd models (CUDA)"),
          eager: bool = typer.Option(False, "--eager", help="Also time the eager step where the default is "
                                     "a CUDA graph (train.cuda_graphs=false)"),
          baseline: bool = typer.Option(False, "--baseline", help="Also time a conventional trainer (PIL images, "
                                        "torchvision transforms in DataLoader workers, fp32) on the same models, "
                                        "and give each row's speed relative to it"),
          workers: int = typer.Option(4, "--workers", min=0, help="DataLoader worker processes of --baseline"),
          compare_steps: int = typer.Option(0, "--compare-steps", min=0, help="Instead of timing: train the first "
                                            "N steps eagerly (twice) and graphed from the same start and print "
                                            "how far the losses differ"),
          out: Optional[Path] = typer.Option(None, "--out", help="Also write the table as CSV here"),
          config_dir: Optional[List[Path]] = CONFIG_DIR,
          cfg_part: Optional[str] = CFG):
    """Training throughput (images/s), ms/step and peak GPU memory per model, on this machine's device."""
    import pandas as pd

    from resexp.sweep.plan import parse_list
    from resexp.tools import bench as b

    archs_, depths_ = parse_list(archs, str, "archs"), parse_list(depths, int, "depths")
    if cfg_part is not None:
        return _print_cfg(b.bench_config(archs_[0], depths_[0], overrides or [], config_dir or []), cfg_part,
                          f"the config bench times for {archs_[0]}-{depths_[0]} (the other models differ in "
                          f"model.arch and model.depth)")
    if compare_steps:
        tables = b.run_compare(archs_, depths_, compare_steps, overrides or [], config_dir or [])
        print("\n".join(b.format_compare(t) for t in tables))
        table = pd.concat(tables, ignore_index=True)
    else:
        table = b.run_bench(archs_, depths_, steps, compile, overrides or [], config_dir or [],
                            eager=eager, baseline=baseline, workers=workers)
        print(b.format_bench(table))
    if out is not None:
        try:
            table.to_csv(out, index=False)
        except OSError as err:
            raise UserError(f"cannot write {out}: {err.strerror or err}") from None


def _interruptible(fn):
    """Ctrl-C while training: say what is kept (a sweep's Interrupted has its own line), exit
    130 (no traceback); 143 for SIGTERM (Terminated, maybe behind a sweep's Interrupted)."""
    try:
        return fn()
    except KeyboardInterrupt as err:
        kept = "interrupted: finished epochs are saved; rerun the same command to continue"
        print(f"\n{str(err) or kept}", file=sys.stderr)
        cause = err
        while cause is not None and not isinstance(cause, Terminated):
            cause = cause.__context__
        raise typer.Exit(128 + signal.SIGTERM if cause is not None else 130) from None


def main() -> None:
    """Entry point. A usage error (``--jobs 0``) and a UserError from the work below are
    each one line on stderr and exit 2."""
    from typer._click import exceptions as click_errors

    try:
        code = app(standalone_mode=False)
    except UserError as err:
        print(f"error: {inert(err)}", file=sys.stderr)
        sys.exit(2)
    except click_errors.NoArgsIsHelpError as err:
        err.show()  # the help text, as for --help
        sys.exit(err.exit_code)
    except click_errors.ClickException as err:
        command = f" {err.ctx.info_name}" if getattr(err, "ctx", None) and err.ctx.parent else ""
        print(f"error: {err.format_message()} (see resexp{command} --help)", file=sys.stderr)
        sys.exit(err.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


def entry() -> None:
    """The ``resexp`` command and ``python -m resexp``: main(), then exit_quickly. (Tests
    call main(), which ends in SystemExit as any command does.)"""
    try:
        main()
    except SystemExit as done:
        exit_quickly(done.code)
    exit_quickly(0)
