"""`resexp train` as a plain function: compose the config, then fit one run in this process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rich.console import Console

from resexp.errors import UserError
from resexp.run.folder import Origin, run_name
from resexp.run.state import Status


@dataclass(repr=False)
class TrainOutcome:
    """What a run's training ended with (resexp.train); its repr is the command's one line."""
    out: Path       # the results folder; the run's own is run_dir
    summary: dict   # the run's summary.json as fit() left it

    @property
    def run_dir(self) -> Path:
        return self.out / run_name(self.summary["arch"], self.summary["depth"], self.summary["seed"])

    @property
    def status(self) -> Status:
        return Status(self.summary["status"])

    def summary_line(self) -> str:
        s = self.summary
        held = "val" if s.get("evaluated_on") == "val" else "test"  # val: no test split, held-out images
        return (f"{s['status']}: {self.run_dir} train err {_pct(s.get('final_train_err'))}, "
                f"{held} err {_pct(s.get(f'final_{held}_err'))}")

    def __repr__(self) -> str:
        return f"<TrainOutcome {self.summary_line()}>"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def train(overrides: Sequence[str] = (), out: Path | None = None, config_dirs: Sequence = (),
          console: Console | None = None) -> TrainOutcome:
    """Train (or resume, or skip if finished) the one run the overrides describe, into
    ``out`` (default results/<name>). Launchers are a sweep's: one here is a UserError."""
    from resexp.settings.compose import is_launcher_override, load_config
    from resexp.train.loop import fit
    from resexp.train.schedule import planned_schedule

    launcher = next((o for o in overrides if is_launcher_override(o)), None)
    if launcher is not None:
        raise UserError(f"{launcher}: launchers are for resexp sweep; train runs here, in this process")
    cfg = load_config(list(overrides), list(config_dirs))
    planned_schedule(cfg)  # a warm-up or milestone past the run's end: one line, before any data loads
    out = Path(out) if out is not None else Path("results") / cfg.name
    origin = Origin(tuple(overrides), tuple(str(Path(d).expanduser().resolve()) for d in config_dirs))  # command.yaml
    return TrainOutcome(out, fit(cfg, out, console=console, origin=origin))
