"""Fair comparisons between depths: each (arch, depth) at its own best setting, and each
depth's gap to the shallowest with a bootstrap interval over seeds.

The table of means leaves two questions open. Does the deep plain net degrade only because
the sweep's one lr suits the shallow one? ``choose`` picks, per (arch, depth), the value of
the swept settings with the lowest mean final validation error (dataset.val_size holds the
split out of the training set), never the test error the report then shows, so the choice
does not flatter the numbers it is judged by. Is a gap between two depths more than seed
noise? ``depth_gaps`` gives it with a percentile bootstrap interval.

Plain functions on load_runs' table (with ``final_val_err`` from load_metrics, with_final).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from resexp.analysis.results import runs_to_average, setting_name, setting_text, setting_value, swept_settings
from resexp.errors import UserError
from resexp.run.state import Status
from resexp.run.text import inert

# What --best-by accepts: metrics.csv columns measured on the validation split. The test
# error is not one: chosen on it, the reported test error would be the best of several draws.
BEST_BY = {"val_err": "val err"}
TIE = 1e-9  # mean errors (%) this close are equal: the order of a sum can change its last digit
# Fewer seeds give no interval: the bootstrap means of 2 seeds take only 3 values, and an
# interval between them says more about the resampling than about the runs.
MIN_SEEDS = 3
RESAMPLES = 10_000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 2016  # fixed, so that a report made twice shows the same intervals


def with_final(runs: pd.DataFrame, metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """runs with a ``final_<metric>`` column: the metric in each run's last metrics.csv row
    (the row final_train_err comes from); NaN where the run has none."""
    column = f"final_{metric}"
    if metric not in metrics.columns:
        return runs.assign(**{column: math.nan})
    last = metrics.sort_values("epoch", kind="stable").drop_duplicates("run", keep="last").set_index("run")[metric]
    return runs.assign(**{column: runs["run"].map(last).astype(float)})


def setting_label(row, settings: list[str]) -> str:
    """'lr=0.05 batch_size=64': a row's values of ``settings`` (results.setting_text)."""
    return " ".join(setting_text(key, row[key]) for key in settings)


def _labelled(runs: pd.DataFrame) -> pd.DataFrame:
    settings = swept_settings(runs)
    return runs.assign(setting=[setting_label(row, settings) for row in runs[settings].to_dict("records")])


def selection_phrase(settings: list[str], best_by: str) -> str:
    """'each (arch, depth) at the lr with the lowest final val err'."""
    names = " and ".join(map(setting_name, settings))
    return f"each (arch, depth) at the {names} with the lowest final {BEST_BY[best_by]}"


def choose(runs: pd.DataFrame, best_by: str = "val_err") -> pd.DataFrame:
    """Per (arch, depth), each value of the swept settings (results.swept_settings) and the
    mean and std over seeds of its runs' ``final_<best_by>`` (with_final), taken over the runs
    the report's means take (results.runs_to_average); ``chosen`` marks the value with the
    lowest mean. A value with a diverged run is never chosen: its mean leaves that seed out
    and would flatter it. Ties (means within TIE) go to the smaller value, the settings
    compared in swept_settings' order (numbers before text, null last).

    Columns: arch, depth, the settings, setting (their text: lr=0.05), n, diverged, <best_by>_mean,
    <best_by>_std (ddof=1), chosen. UserError when the runs vary no setting besides arch, depth
    and seed, or a run in a mean has no <best_by> (trained without a validation split)."""
    if best_by not in BEST_BY:
        raise UserError(f"--best-by must be one of {', '.join(BEST_BY)} (a split held out of training), "
                        f"got {best_by!r}")
    if "evaluated_on" in runs and runs["evaluated_on"].eq("val").any():  # no test split: val is what is shown
        raise UserError(f"--best-by {best_by}: these runs have no test split, so their val err is the error the "
                        "table shows; chosen on it, each value shown would be the best of several draws")
    settings, score = swept_settings(runs), f"final_{best_by}"
    if not settings:
        raise UserError(f"--best-by {best_by} chooses between the values of a setting the sweep varies besides "
                        "arch, depth and seed (e.g. resexp sweep ... train.lr=0.1,0.05,0.02); these runs vary none")
    labelled = _labelled(runs)
    used = runs_to_average(labelled)
    missing = used.loc[used[score].isna(), "run"] if score in used.columns else used["run"]
    if len(missing):
        raise UserError(f"--best-by {best_by} needs the {BEST_BY[best_by]} of every run, and {inert(missing.iloc[0])} "
                        "has none: train with a validation split, e.g. dataset.val_size=5000 (the last 5,000 "
                        "training images)")
    cells = ["arch", "depth", "setting"]
    counts = labelled.groupby(cells, sort=False).agg(
        **{key: (key, "first") for key in settings},
        diverged=("status", lambda s: int(s.eq(Status.DIVERGED).sum())))
    stats = used.groupby(cells, sort=False).agg(
        n=("run", "size"), **{f"{best_by}_mean": (score, "mean"), f"{best_by}_std": (score, "std")})
    table = counts.join(stats, how="left").reset_index()
    table["n"] = table["n"].fillna(0).astype(int)
    table["chosen"] = False
    for _, options in table.groupby(["arch", "depth"], sort=False):
        candidates = options[options["diverged"].eq(0) & options[f"{best_by}_mean"].notna()]
        if candidates.empty:
            continue
        best = candidates[f"{best_by}_mean"].min()
        tied = candidates[candidates[f"{best_by}_mean"] <= best + TIE]
        table.loc[min(tied.index, key=lambda i: [_order(tied.at[i, key]) for key in settings]), "chosen"] = True
    return table[["arch", "depth", *settings, "setting", "n", "diverged", f"{best_by}_mean", f"{best_by}_std",
                  "chosen"]]


def _order(value) -> tuple:
    """A setting value's place in the tie-break: numbers by size, then text, then null."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.number)):
        return (0, float(value), "")
    return (1, 0.0, setting_value(value))


def at_chosen(runs: pd.DataFrame, choice: pd.DataFrame) -> pd.DataFrame:
    """The runs of each (arch, depth) at its chosen value (choose); an (arch, depth) with
    nothing to choose (a run diverged at every value) has none."""
    cells = ["arch", "depth", "setting"]
    picked = choice.loc[choice["chosen"]].set_index(cells).index
    return runs[_labelled(runs).set_index(cells).index.isin(picked)]


def unchosen(choice: pd.DataFrame) -> list[str]:
    """'plain-56' for each (arch, depth) with no value chosen (a run diverged at every value)."""
    chosen = choice.groupby(["arch", "depth"], sort=False)["chosen"].any()
    return [f"{arch}-{depth}" for (arch, depth), found in chosen.items() if not found]


# --------------------------------------------------------------------------- depth gaps
def resampled_gaps(shallow, deep, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``resamples`` bootstrap replicates of mean(deep) - mean(shallow): each draws as many of
    the shallow cell's seeds as it has, with replacement, and likewise in the deep cell, each
    cell on its own (a seed of one depth is another run than the same seed of another)."""
    rng = np.random.default_rng(seed)
    shallow, deep = np.asarray(shallow, dtype=float), np.asarray(deep, dtype=float)
    means = [cell[rng.integers(0, len(cell), size=(resamples, len(cell)))].mean(axis=1) for cell in (shallow, deep)]
    return means[1] - means[0]


def gap_interval(shallow, deep, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The CONFIDENCE percentile interval of resampled_gaps (numpy's linear interpolation)."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(resampled_gaps(shallow, deep, resamples, seed), [tail, 100 - tail])
    return float(low), float(high)


def depth_gaps(runs: pd.DataFrame, within: list[str]) -> pd.DataFrame:
    """Per arch and value of the settings ``within``, each depth's final training error minus
    that of the shallowest depth with runs, as the difference of their means over seeds (the
    runs the report's means take), and gap_low/gap_high, its CONFIDENCE interval (gap_interval),
    where both cells have MIN_SEEDS seeds or more (NaN otherwise).

    ``within``: the settings a comparison holds fixed (results.swept_settings; none for the
    runs at_chosen keeps, where each depth is at its own value). Columns: arch, depth, setting
    (the deep cell's, choose), shallowest, n_shallowest, n, gap, gap_low, gap_high, compared
    (plain-56 lr=0.1 vs plain-20 lr=0.1)."""
    used = _labelled(runs_to_average(runs))
    rows = []
    for _, line in used.groupby(["arch", *within], sort=False, dropna=False):
        (top, base), *deeper = line.groupby("depth")  # in depth order
        for depth, cell in deeper:
            shallow, deep = base["final_train_err"].to_numpy(float), cell["final_train_err"].to_numpy(float)
            enough = min(len(shallow), len(deep)) >= MIN_SEEDS
            low, high = gap_interval(shallow, deep) if enough else (math.nan, math.nan)
            rows.append({"arch": cell["arch"].iloc[0], "depth": depth, "setting": cell["setting"].iloc[0],
                         "shallowest": top, "n_shallowest": len(shallow), "n": len(deep),
                         "gap": deep.mean() - shallow.mean(), "gap_low": low, "gap_high": high,
                         "compared": f"{_cell_name(cell, depth)} vs {_cell_name(base, top)}"})
    columns = ["arch", "depth", "setting", "shallowest", "n_shallowest", "n", "gap", "gap_low", "gap_high", "compared"]
    return pd.DataFrame(rows, columns=columns)


def _cell_name(cell: pd.DataFrame, depth: int) -> str:
    return f"{cell['arch'].iloc[0]}-{depth} {cell['setting'].iloc[0]}".strip()
