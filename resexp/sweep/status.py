"""`resexp status`: each run's state, with the saved sweep's runs not yet started and the
sweep's SLURM jobs. Reads files and asks squeue; imports neither torch nor submitit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from resexp.analysis.results import file_warning, sort_runs, status_table
from resexp.errors import UserError
from resexp.run.folder import parse_run_name
from resexp.run.state import Status
from resexp.run.text import inert
from resexp.sweep.jobs import ended_states, is_active, queue, read_records
from resexp.sweep.saved import planned_names, saved_spec

def status_with_jobs(results_dir: Path, runs=None, warnings: list | None = None):
    """results.status_table with the runs the saved sweep plans but has not started ('new')
    and the sweep's SLURM jobs: a run whose job waits in the queue is 'queued' (listed even
    before its folder exists), one whose job runs is 'running',
    and a ``job`` column gives each run's latest job id, its state and node. Returns
    (table, a line saying where the job logs are, or None when no job was submitted).
    ``runs``: results.load_runs(results_dir) when the caller has it. A damaged job
    records file or sweep.yaml is UserError or, given a ``warnings`` list, a line in it
    (results.file_warning), and the table is shown without what the file holds."""
    records = _read(read_records, results_dir, warnings, "the runs are shown without their SLURM jobs")
    planned = planned_names(_read(saved_spec, results_dir, warnings,
                                  "the runs it plans are listed only where they have a folder"))
    try:
        table = status_table(results_dir, runs)
    except UserError:
        if not records and not planned:
            raise
        table = pd.DataFrame(columns=["run", "status", "progress", "train_err", "test_err", "owner", "error"])
    # Runs of the sweep not yet started (no folder yet) and runs whose job waits: listed as new.
    missing = sorted((set(records) | set(planned)) - set(table["run"]))
    if missing:  # back into legend order, with the runs that have folders
        extra = pd.DataFrame({"run": missing, "status": Status.NEW, "progress": "-", "owner": ""})
        table = pd.concat([table, extra.reindex(columns=table.columns)], ignore_index=True)
        names = pd.DataFrame([parse_run_name(n) or {} for n in table["run"]], index=table.index)
        table = sort_runs(pd.concat([table, names], axis=1)).drop(columns=list(names.columns))
    table["owner"] = table["owner"].fillna("")
    if not records:
        return table, None
    jobs = queue() or {}
    ended = ended_states(r["job_id"] for r in records.values() if r["job_id"] not in jobs)
    table["job"] = table["run"].map(lambda name: _job_text(records.get(name), jobs, ended))
    table["status"] = [_status(status, records.get(name), jobs)
                       for name, status in zip(table["run"], table["status"], strict=True)]
    folder = Path(next(iter(records.values()))["stderr"]).parent
    return table, inert(f"job logs: {folder}/<job id>_0_log.err (training lines) and .out (submitit)")


def _read(read, results_dir: Path, warnings: list | None, then: str) -> dict:
    """read(results_dir); {} if its file is damaged and ``warnings`` takes a line for it."""
    try:
        return read(results_dir)
    except UserError as err:
        if warnings is None:
            raise
        warnings.append(file_warning(err, then))
        return {}


def _job_text(record: dict | None, jobs: dict, ended: dict) -> str:
    """'12_3 RUNNING on node7', '12_4 PENDING (Priority)', '12_0 COMPLETED' (sacct), '12_0 ended'."""
    if record is None:
        return "-"
    job = jobs.get(record["job_id"])
    if job is None:
        return f"{record['job_id']} {ended.get(record['job_id'], 'ended')}"
    where = f" on {job['node']}" if job["state"] == "RUNNING" else f" ({job['reason']})"
    return f"{record['job_id']} {job['state']}{where}"


def _status(status: str, record: dict | None, jobs: dict) -> str:
    """The run's own state, unless it waits for its job: queued, or running (the job has
    started but not yet taken the run's lock)."""
    job = jobs.get(record["job_id"]) if record else None
    if not is_active(job) or status in (Status.DONE, Status.DIVERGED, Status.RUNNING):
        return status
    return Status.RUNNING if job["state"] == "RUNNING" else Status.QUEUED
