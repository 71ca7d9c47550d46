"""Read run directories into pandas tables: one row per run, one row per epoch.

Plots and reports read only what the trainer wrote (summary.json, metrics.csv,
config.yaml), never its log output. docs/results-format.md describes the files.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from resexp.errors import UserError
from resexp.models.registry import arch_info, list_models
from resexp.run.files import read_bytes, TEST_COLUMNS, VAL_COLUMNS
from resexp.run.folder import DamagedFile, RunDir, RunState, parse_run_name
from resexp.run.state import ORDER, UNFINISHED, Status
from resexp.run.text import inert

RUN_COLUMNS = [
    "run", "path", "arch", "depth", "seed", "dataset", "synthetic", "params", "status",
    "epochs", "epochs_planned", "iterations", "iterations_planned", "test_images", "evaluated_on",
    "final_train_err", "final_test_err", "final_val_err", "wall_seconds", "schedule", "experiment",
    "device", "error", "display_name", "augmented", "hardware", "owner", "heartbeat_age", "advice",
    "train.lr", "train.batch_size",  # then one column per other setting the runs' sweep varies (swept_settings)
]


def read_states(results_dir) -> list[tuple[Path, RunState]]:
    """Each run folder under results_dir with its state, every folder read once
    (RunDir.is_run: config.yaml names a registered architecture); UserError if there is none."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"results directory not found: {root}")
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        run = RunDir(path)
        state = run.state()
        if run.is_run(state):
            found.append((path, state))
    if not found:
        raise UserError(f"no runs in {root} (expected folders named <arch>-<depth>-s<seed>)")
    return found


def run_record(run_dir: Path, state: RunState) -> dict:
    """One row of load_runs, from the run's state: the last metrics row's numbers (the log
    is newer than summary.json after a kill between the two writes), the summary's for
    the rest. A damaged run gets what its readable files say, and its problem as error.
    Each error under its true name (evaluated_on): a run evaluated on images held out of
    the training split has final_val_err and no final_test_err, nor test_images."""
    held = evaluated_on(state)
    summary, last = state.summary, true_names(state.last or {}, held)
    # a run that named its held-out images test (before evaluated_on was recorded)
    old = "final_test_err" if held == "val" and "final_val_err" not in summary else "final_val_err"

    def pick(key, fallback=math.nan):
        value = summary.get(key)
        return fallback if value is None else value

    arch, depth, seed = _identity(run_dir, state)
    # config.yaml's reader holds its sections to dicts ({} for a damaged run's config)
    dataset, train = state.config.get("dataset", {}), state.config.get("train", {})
    return {
        "run": run_dir.name,
        "path": str(run_dir),
        "arch": arch,
        "depth": depth,
        "seed": seed,
        "dataset": pick("dataset", dataset.get("name")),
        "synthetic": bool(pick("synthetic", dataset.get("synthetic", False))),
        "params": float(pick("params")),
        "status": state.status,
        "epochs": state.epochs if state.last else int(pick("epochs", 0)),
        "epochs_planned": float(pick("epochs_planned", train.get("epochs") or math.nan)),
        "iterations": float(last.get("iteration", pick("iterations"))),
        "iterations_planned": float(pick("iterations_planned", train.get("iterations") or math.nan)),
        # the report: is it the paper's 10,000-image test set?
        "test_images": float(pick("test_images")) if held == "test" else math.nan,
        "evaluated_on": held,
        "final_train_err": float(last.get("train_err", pick("final_train_err"))),
        "final_test_err": float(last.get("test_err", pick("final_test_err"))) if held == "test" else math.nan,
        "final_val_err": float(last.get("val_err", pick(old))),
        "wall_seconds": float(last.get("elapsed", pick("wall_seconds"))),
        "schedule": pick("schedule", None),
        "experiment": pick("experiment", state.config.get("name")),
        "device": pick("device", None),
        "error": state.problem if state.status == Status.DAMAGED else pick("error", None),
        "display_name": dataset.get("display_name") or _shipped_display_name(pick("dataset", dataset.get("name"))),
        "augmented": _augmented(dataset),
        "hardware": hardware_of(summary),
        # who holds the lock of a running (or stale) run and when it was last heard from, or that it ended
        "owner": state.owner.describe() if state.owner else None,
        "heartbeat_age": state.owner.heartbeat_age if state.owner else math.nan,
        "advice": state.advice if state.status == Status.DAMAGED else None,
        **_settings(run_dir, state),
    }


# What each run's held-out evaluation is named in tables and figures: the dataset's test
# split, or images held out of the training split (dataset.val_size) where it has none.
EVALUATED = {"test": "test error", "val": "held-out error (val, training images)"}


def evaluated_on(state: RunState) -> str:
    """'test' or 'val': what the run evaluated after each epoch, as its summary.json says.
    A run from before it said so, by its files: metrics.csv with the val pair and no test
    pair, or with the test pair and no val pair while its config holds images out of the
    training split (dataset.val_size) and its summary counts exactly those as test_images:
    a dataset without a test split, whose held-out images were then logged as test."""
    said = state.summary.get("evaluated_on")
    if said in EVALUATED:
        return said
    columns = state.log.columns if state.log else []
    if "val_err" in columns:
        return "val" if "test_err" not in columns else "test"
    dataset = state.config.get("dataset", {})
    held, subset = dataset.get("val_size"), dataset.get("test_subset")
    if not (isinstance(held, int) and held > 0 and "test_err" in columns):
        return "test"
    expected = min(subset, held) if isinstance(subset, int) and subset > 0 else held
    return "val" if state.summary.get("test_images") == expected else "test"


def true_names(row: dict, held: str) -> dict:
    """A metrics row with the held-out pair under its true name: the val pair of a run
    evaluated on held-out training images that logged them as test."""
    if held != "val" or "val_err" in row:
        return row
    named = dict(zip(TEST_COLUMNS, VAL_COLUMNS))
    return {named.get(key, key): value for key, value in row.items()}


def evaluated_split(runs: pd.DataFrame) -> str:
    """'test' or 'val' (EVALUATED): what the runs' held-out error was measured on; UserError
    where they differ, since one column or line of a figure cannot mean both."""
    if "evaluated_on" not in runs:  # a table made elsewhere, of test errors
        return "test"
    found = {on: runs.loc[runs["evaluated_on"].eq(on), "run"] for on in EVALUATED}
    if len(found["test"]) and len(found["val"]):
        raise UserError(f"runs evaluated on the test split ({inert(found['test'].iloc[0])}, ...) and on images "
                        f"held out of the training split ({inert(found['val'].iloc[0])}, ...: the dataset had no "
                        "test split) in one results directory; keep them in separate results directories")
    return "val" if len(found["val"]) else "test"


def held_out(table: pd.DataFrame) -> str:
    """'test', or 'val' where a table made of the runs (aggregate, a figure's data) holds the val
    error in the test error's place (evaluated_split). A table chosen on the val error
    (compare.choose) has both, and shows the test error."""
    return "test" if {"test_err", "test_err_mean"} & set(table.columns) else "val"


# Columns of load_runs and load_metrics besides the swept settings: what shapes a result (the
# optimiser, the batch, the length and schedule), then the model options of the run's arch.
RESULT_SETTINGS = ("train.lr", "train.batch_size", "train.epochs", "train.iterations", "train.milestones",
                   "train.weight_decay")


def _settings(run_dir: Path, state) -> dict:
    """RESULT_SETTINGS, the model.* options the run's arch takes (resexp/models/archs.py) and the
    settings the run's folder name says its sweep varied (resexp.run.folder.run_name), as its
    config.yaml holds them, else as the name does."""
    named = {k: v for k, v in (parse_run_name(run_dir.name) or {}).items() if "." in k}
    arch = _identity(run_dir, state)[0]
    options = [f"model.{k}" for k in arch_info(arch).options] if arch in list_models() else []
    found = {}
    for key in dict.fromkeys([*RESULT_SETTINGS, *options, *named]):
        node = state.config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = named.get(key) if node is None and key in named else node
        found[key] = tuple(value) if isinstance(value, list) else value  # a list as a groupby key
    return found


def setting_name(key: str) -> str:
    """A swept setting's key as folder names, legends and tables show it: the train
    section's without "train." (lr), any other in full (dataset.train_subset)."""
    return key[len("train."):] if key.startswith("train.") and key.count(".") == 1 else key


def setting_value(value) -> str:
    """One value of a swept setting as legends and tables show it: 0.05, 1024, null, [16,32,64]."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "null"
    if isinstance(value, float):  # a groupby may have made a float of an int beside a null
        return str(int(value)) if value.is_integer() else repr(float(value))
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def setting_text(key: str, value) -> str:
    """'lr=0.05', 'dataset.train_subset=null'."""
    return f"{setting_name(key)}={setting_value(value)}"


def swept_settings(runs: pd.DataFrame) -> list[str]:
    """The config keys the runs' sweeps varied besides arch, depth and seed (their folder
    names say which: plain-20-s0-lr=0.05), in the order of the names."""
    named = (parse_run_name(str(name)) or {} for name in runs["run"])
    return sorted({key for parsed in named for key in parsed if "." in key})


def _identity(run_dir: Path, state) -> tuple[str, int, int]:
    """arch, depth and seed: from the run's config, else its summary, else its folder name."""
    if state.config:
        return state.config["model"]["arch"], state.config["model"]["depth"], state.config["seed"]
    if all(k in state.summary for k in ("arch", "depth", "seed")):
        return state.summary["arch"], state.summary["depth"], state.summary["seed"]
    names = parse_run_name(run_dir.name)  # RunDir.is_run() made sure it parses
    return names["arch"], names["depth"], names["seed"]


def hardware_of(summary: dict) -> str | None:
    """One label for the machine a run computed on (what report compares); None when the
    summary does not say (no device, or a CPU run from before the CPU was recorded). The
    thread count is not part of it: runs of one machine with 1 and 2 threads are one machine."""
    device = summary.get("device")
    if device != "cpu":
        return str(device) if device else None
    if not summary.get("cpu_model"):
        return None
    bf16 = "+".join(summary.get("cpu_bf16") or []) or "no native bf16"
    return f"{summary['cpu_model']} ({bf16})"


def _shipped_display_name(name):
    """A run from before display names were recorded: the shipped dataset YAML's, else the name."""
    from resexp.settings.compose import shipped_config_dir
    try:
        shipped = yaml.safe_load((shipped_config_dir() / "dataset" / f"{name}.yaml").read_text())
    except (OSError, TypeError, yaml.YAMLError):
        return name
    return shipped.get("display_name") or name if isinstance(shipped, dict) else name


def _augmented(dataset: dict) -> bool | None:
    """Whether training batches were cropped/flipped (None: the config does not say)."""
    augment = dataset.get("augment")
    if not isinstance(augment, dict):
        return None
    return bool(augment.get("pad")) or bool(augment.get("hflip"))


def sort_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in legend order: plain archs before residual ones, then by the swept settings,
    depth, seed, epoch."""
    rank = {arch: arch_info(arch).order for arch in list_models()}  # as registered: plain nets first
    ordered = table.assign(_rank=table["arch"].map(lambda arch: rank.get(arch, len(rank))))
    swept = swept_settings(table) if "run" in table.columns else [c for c in table.columns if "." in c]
    by = ["_rank", *[c for c in ["arch", *swept, "depth", "seed", "epoch"] if c in table.columns]]
    return ordered.sort_values(by, kind="stable").drop(columns="_rank").reset_index(drop=True)


@dataclass
class Results:
    """A results folder read once: one row per run, and one row per epoch of every run."""
    runs: pd.DataFrame
    metrics: pd.DataFrame


def read_results(results_dir) -> Results:
    """load_runs and load_metrics of results_dir from one read of each run folder."""
    records, frames = [], []
    for path, state in read_states(results_dir):
        records.append(run_record(path, state))
        if state.rows:
            rows = [true_names(row, records[-1]["evaluated_on"]) for row in state.rows]
            frame = pd.DataFrame(rows).assign(**{k: records[-1][k] for k in ("run", "arch", "depth", "seed")})
            for key in (k for k in records[-1] if "." in k):  # its settings (_settings) on each of its epochs
                frame[key] = pd.Series([records[-1][key]] * len(frame), dtype=object)
            frames.append(frame)
    columns = RUN_COLUMNS + sorted({k for r in records for k in r} - set(RUN_COLUMNS))
    table = pd.DataFrame.from_records(records, columns=columns)
    for key in columns[len(RUN_COLUMNS):]:  # as the configs hold them: 1024 stays an int beside a null
        table[key] = pd.Series([r.get(key) for r in records], dtype=object)
    runs = sort_runs(table)
    if not frames:
        return Results(runs, pd.DataFrame(columns=["run", "arch", "depth", "seed", "epoch"]))
    table = pd.concat(frames, ignore_index=True)
    front = ["run", "arch", "depth", "seed"]
    settings = [c for c in runs.columns if c in table.columns and "." in c]  # last, in load_runs' order
    rest = [c for c in table.columns if c not in front and c not in settings]
    return Results(runs, sort_runs(table[front + rest + settings]))


def load_runs(results_dir) -> pd.DataFrame:
    """One row per run folder in results_dir, with its status as RunDir.state() sees it."""
    return read_results(results_dir).runs


def load_metrics(results_dir) -> pd.DataFrame:
    """All epochs of all runs as one long table: run, arch, depth, seed, then metrics.csv's
    columns. Runs whose metrics.csv is damaged have none."""
    return read_results(results_dir).metrics


def runs_to_average(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs behind each (arch, depth) point of the plots and the report.

    Finished runs ('done') when the point has any; otherwise the unfinished ones
    (running, partial, failed) at their latest epoch, so a sweep in progress still
    plots. The two are never mixed: an unfinished seed would drag the mean of
    finished ones. Diverged runs never count: their error measures a blow-up of the
    optimiser, not how well the depth trains; aggregate() counts them instead.
    Runs without a finished epoch have no error yet and are skipped.
    """
    has_value = runs["final_train_err"].notna()
    finished = runs["status"].eq(Status.DONE) & has_value
    unfinished = runs["status"].isin(list(UNFINISHED)) & has_value
    point = [runs[k] for k in ["arch", "depth", *swept_settings(runs)]]
    point_has_finished = finished.groupby(point, dropna=False).transform("any")
    return runs[finished | (unfinished & ~point_has_finished)]


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, depth) and value of each swept setting (swept_settings): seeds averaged,
    mean and std of the final errors, cost.

    Columns: arch, depth, the swept settings, n (runs in the mean), finished (they are done runs),
    diverged, failed, damaged and unfinished (counts; diverged and damaged runs are
    never in the mean, unfinished ones only where no run is done), params,
    train_err_mean/std, test_err_mean/std (val_err_mean/std where the runs were evaluated on
    images held out of the training split: evaluated_split), epochs (fewest among the runs
    in the mean), epochs_planned, wall_seconds (mean). std uses ddof=1 and is NaN for a
    single seed: a spread of 0 would claim a certainty one run cannot give.
    """
    keys = ["arch", "depth", *swept_settings(runs)]  # a point per swept setting too (plain-20-s0-lr=0.05)
    held = f"{evaluated_split(runs)}_err"
    used = runs_to_average(runs).assign(finished=lambda t: t["status"].eq(Status.DONE))
    stats = used.groupby(keys, dropna=False).agg(
        n=("seed", "size"),
        finished=("finished", "all"),
        train_err_mean=("final_train_err", "mean"),
        train_err_std=("final_train_err", "std"),
        **{f"{held}_mean": (f"final_{held}", "mean"), f"{held}_std": (f"final_{held}", "std")},
        epochs=("epochs", "min"),
        wall_seconds=("wall_seconds", "mean"),
    )
    counts = runs.groupby(keys, dropna=False).agg(
        diverged=("status", lambda s: int(s.eq(Status.DIVERGED).sum())),
        failed=("status", lambda s: int(s.eq(Status.FAILED).sum())),
        damaged=("status", lambda s: int(s.eq(Status.DAMAGED).sum())),
        unfinished=("status", lambda s: int(s.isin(list(UNFINISHED)).sum())),
        params=("params", "max"),
        epochs_planned=("epochs_planned", "max"),
    )
    table = counts.join(stats, how="left").reset_index()
    # A point whose every run diverged has no mean, but stays in the table with its count.
    table["n"] = table["n"].fillna(0).astype(int)
    table["finished"] = table["finished"].astype("boolean").fillna(False).astype(bool)
    columns = keys + ["n", "finished", "diverged", "failed", "damaged", "unfinished", "params",
                      "train_err_mean", "train_err_std", f"{held}_mean", f"{held}_std",
                      "epochs", "epochs_planned", "wall_seconds"]
    return sort_runs(table[columns])


def experiment_info(runs: pd.DataFrame) -> dict:
    """What figure titles and report headers name: dataset, synthetic, schedule, experiment."""
    datasets = sorted(inert(d) for d in runs["dataset"].dropna().unique())
    if len(datasets) > 1:
        raise UserError(
            f"runs of several datasets ({', '.join(datasets)}) in one results directory; "
            "keep one dataset per results directory"
        )
    schedules = sorted(inert(s) for s in runs["schedule"].dropna().unique())
    experiments = sorted(inert(e) for e in runs["experiment"].dropna().unique())
    names = sorted(inert(d) for d in runs["display_name"].dropna().unique())
    augmented = set(runs["augmented"].dropna().astype(bool))
    return {
        "dataset": datasets[0] if datasets else "unknown dataset",
        "display_name": names[0] if len(names) == 1 else (datasets[0] if datasets else "unknown dataset"),
        "synthetic": bool(runs["synthetic"].any()),
        "schedule": "; ".join(schedules),
        "length": _run_length(runs),
        "experiment": ", ".join(experiments),
        # True / False when every run agrees, "mixed" when not, None when no config says
        "augmented": augmented.pop() if len(augmented) == 1 else ("mixed" if augmented else None),
        "hardware": runs["hardware"].dropna().map(inert).value_counts().to_dict(),
        "evaluated_on": evaluated_split(runs),  # test, or val: what titles and headers call the held-out error
    }


def _run_length(runs: pd.DataFrame) -> str:
    """'2,500 iterations (10 epochs)': the planned length, for titles (a range if runs differ)."""
    its, eps = runs["iterations_planned"].dropna(), runs["epochs_planned"].dropna()
    if its.empty:
        return ""
    span = lambda v: f"{int(v.min()):,}" if v.min() == v.max() else f"{int(v.min()):,}–{int(v.max()):,}"  # noqa: E731
    return f"{span(its)} iterations" + (f" ({span(eps)} epochs)" if not eps.empty else "")


def dataset_label(info: dict) -> str:
    """The dataset's name, flagged when the images were generated rather than real."""
    name = info.get("display_name") or info["dataset"]
    return f"{name} (synthetic data)" if info["synthetic"] and "synthetic" not in name else name


def status_table(results_dir, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run: run, status, progress ('epoch k/K'), latest train_err and test_err,
    owner (who trains a running run, or left a stale lock, and its last heartbeat), error
    (of a failed run; what is wrong with a damaged one). ``runs``: load_runs(results_dir).
    val_err in place of test_err where the runs were evaluated on images held out of the
    training split (beside it, where some were and some were not)."""
    runs = load_runs(results_dir) if runs is None else runs
    planned = runs["epochs_planned"].map(lambda k: "?" if pd.isna(k) else str(int(k)))
    held = [on for on in EVALUATED if runs["evaluated_on"].eq(on).any()] or ["test"]
    return pd.DataFrame({
        "run": runs["run"],
        "status": runs["status"],
        "progress": "epoch " + runs["epochs"].astype(str) + "/" + planned,
        "train_err": runs["final_train_err"],
        **{f"{on}_err": runs[f"final_{on}_err"] for on in held},
        "owner": runs["owner"].fillna(""),
        "error": runs["error"],
    })


# What status says of a val_err column: it is no test error.
VAL_NOTE = "val_err: the error on images held out of the training split (dataset.val_size), not on a test split"


def format_status(table: pd.DataFrame) -> str:
    """status_table as aligned text, errors with two decimals, then a count per status (and
    VAL_NOTE where a val_err column is shown)."""
    shown = table.copy()
    errors = [c for c in ("train_err", "test_err", "val_err") if c in shown]
    for column in errors:
        shown[column] = shown[column].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")
    # Only the first line of an error message: one line per run. Names and owners come from
    # the folder too (a run folder is any folder whose config.yaml names an arch): inert.
    shown["error"] = shown["error"].map(lambda e: "" if pd.isna(e) else inert(str(e).splitlines()[0])[:80])
    shown["run"], shown["owner"] = shown["run"].map(inert), shown["owner"].map(inert)
    for column in ("owner", "error"):
        if not shown[column].astype(bool).any():
            shown = shown.drop(columns=column)
    note = f"\n{VAL_NOTE}" if "val_err" in errors else ""
    return f"{shown.to_string(index=False)}\n{len(table)} runs: {status_tally(table['status'])}{note}"


def damage_warnings(runs: pd.DataFrame) -> list[str]:
    """One line per damaged run: which file, what is wrong, what happens next."""
    damaged = runs[runs["status"].eq(Status.DAMAGED)]
    return [inert(f"warning: {r.run} is damaged: {r.error}; {r.advice}") for r in damaged.itertuples()]


def file_warning(err: UserError, then: str) -> str:
    """One line for a damaged file that is not a run's own (a diagnostics CSV, the job
    records, sweep.yaml): ``err`` names the file and what is wrong; ``then`` says what
    the command did without it."""
    return inert(f"warning: {err}; {then}")


def status_tally(statuses: pd.Series) -> str:
    """'3 done, 1 running, 1 diverged': counts in a fixed order, unknown statuses last."""
    counts = statuses.value_counts()
    order = [s for s in ORDER if s in counts] + sorted(set(map(str, counts.index)) - set(ORDER))
    return ", ".join(f"{counts[status]} {status}" for status in order)


# --------------------------------------------------------------------------- diagnostics
# The measurements' own keys in each diagnostics file (besides run and epoch).
DIAGNOSTIC_KEYS = {"responses": ["layer"], "gradients": ["kind", "index"], "identity": ["block"]}
# The numeric columns the figures read from each file (resexp/inside/diagnostics.py writes them).
DIAGNOSTIC_NUMBERS = {"responses": ["epoch", "layer", "stage", "block", "std"],
                      "gradients": ["epoch", "index", "stage", "block", "norm"],
                      "identity": ["epoch", "block", "stage", "branch_ratio", "change"]}
MEASURED = ("std", "norm", "branch_ratio", "change")


def _read_diagnostics(path: Path, kind: str) -> pd.DataFrame | None:
    """One run's diagnostics file with its numeric columns as numbers (None if there is none);
    DamagedFile naming the file if it is no CSV table, a column the figures read is missing,
    holds something else, or a value out of its range (epochs and indices are whole numbers
    from 0, a measured std, norm or ratio is not negative)."""
    data = read_bytes(path)  # bounded: a file larger than a run writes is damage
    if data is None:
        return None
    try:
        table = pd.read_csv(io.BytesIO(data))
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DamagedFile(path, f"is not a CSV table ({type(err).__name__})") from None
    missing = [c for c in ["epoch", *DIAGNOSTIC_KEYS[kind], *DIAGNOSTIC_NUMBERS[kind]] if c not in table.columns]
    if missing:
        raise DamagedFile(path, f"has no {missing[0]} column")
    for column in DIAGNOSTIC_NUMBERS[kind]:
        values = pd.to_numeric(table[column], errors="coerce")
        measured = column in MEASURED
        # a measured value may be nan (written as such); a count or a word in its place may not
        bad = values.isna() & (table[column].notna() | (not measured))
        what = "is not a number"
        if not bad.any():
            bad = values.lt(0) if measured else ~(values.ge(0) & values.mod(1).eq(0))
            what = "is out of range"
        if bad.any():
            line = int(bad.to_numpy().argmax()) + 2
            raise DamagedFile(path, f"line {line}: {column} {what}")
        table[column] = values
    return table


def load_diagnostics(results_dir, kind: str, runs: pd.DataFrame | None = None,
                     damaged: list | None = None) -> pd.DataFrame | None:
    """One diagnostics file (responses, gradients or identity; resexp/inside/diagnostics.py) of every
    run that the figures average (runs_to_average), as one table with a ``point`` column:
    ``init`` for epoch 0, ``end`` for each run's last measured epoch, else ``epoch``.
    None when no such run has the file. A damaged file is DamagedFile, or, given a
    ``damaged`` list, appended to it and left out (the other runs' files still count)."""
    runs = load_runs(results_dir) if runs is None else runs
    frames = []
    for row in runs_to_average(runs).itertuples(index=False):
        try:
            table = _read_diagnostics(Path(row.path) / f"{kind}.csv", kind)
        except DamagedFile as err:
            if damaged is None:
                raise
            damaged.append(err)
            continue
        if table is None:
            continue
        # An epoch measured twice (redone after a crash) gives the same numbers; keep one.
        table = table.drop_duplicates(["epoch", *DIAGNOSTIC_KEYS[kind]], keep="last")
        last = table["epoch"].max()
        point = table["epoch"].map(lambda e, last=last: "init" if e == 0 else "end" if e == last else "epoch")
        frames.append(table.assign(run=row.run, arch=row.arch, depth=row.depth, seed=row.seed, point=point))
    return sort_runs(pd.concat(frames, ignore_index=True)) if frames else None


# --------------------------------------------------------------------------- which training error
TRAIN_ERRORS = {
    "minibatch": "mean minibatch error over the last epoch, augmentation on (He et al. 2016, Fig. 6)",
    "clean": "the clean training set in eval mode, no augmentation (train.eval_train=true)",
}


def pick_train_error(runs: pd.DataFrame, metrics: pd.DataFrame, which: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs and metrics whose train_err columns hold the chosen training error (TRAIN_ERRORS).
    ``clean`` needs the clean_train_err column in every run that finished an epoch."""
    if which not in TRAIN_ERRORS:
        raise UserError(f"--train-error must be one of {', '.join(TRAIN_ERRORS)}, got {which!r}")
    if which == "minibatch":
        return runs, metrics
    clean = metrics.dropna(subset=["clean_train_err"]) if "clean_train_err" in metrics else metrics.iloc[:0]
    missing = sorted(set(metrics["run"]) - set(clean["run"]))
    if missing:
        raise UserError(f"{missing[0]} has no clean training error (train with train.eval_train=true), "
                        "or use --train-error minibatch")
    last = clean.sort_values("epoch").groupby("run")["clean_train_err"].last()
    return (runs.assign(final_train_err=runs["run"].map(last)),
            metrics.assign(train_err=metrics["clean_train_err"]))
