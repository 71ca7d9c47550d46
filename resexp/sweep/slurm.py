"""The SLURM launcher: one job per unfinished run of a sweep, submitted through submitit.

submitit writes the sbatch script, submits all runs of one sweep as one job array
(``executor.batch()``, throttled by ``%array_parallelism``), pickles the call each job
makes and handles the signal SLURM sends before the time limit: it calls the job's
``checkpoint()`` and requeues the job. The trainer already resumes a run from its
``checkpoint.pt``, so a requeued job loses at most the epoch in progress, and a run
longer than the time limit finishes over several jobs. docs/slurm.md says why submitit
rather than hand-written sbatch arrays.

Every submission is recorded in ``<out>/.slurm/jobs.jsonl`` (run, job id, log files),
so ``resexp status`` and ``--wait`` can ask ``squeue`` (and ``sacct`` where the cluster
keeps accounting) about the jobs of a sweep.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf
from rich.console import Console
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import _convert_mem

from resexp.errors import UserError
from resexp.run.folder import now
from resexp.run.state import Status
from resexp.run.text import inert
from resexp.settings.compose import importable_dirs, make_importable
from resexp.sweep.jobs import (append_records, ask, ended_states, is_active, queue, read_records, real_slurm_dir,
                               slurm_dir)
from resexp.sweep.task import sweep_progress, train_run

# --wait polls squeue every 1 s at first, then less often (never more than this):
# a sweep of days should not query the controller every second.
MAX_POLL_S = 30.0


# ---- settings


# What a #SBATCH line can hold: an option name, and a value with no whitespace or control
# character (a newline would end the line and start a command of the job script).
SBATCH_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
SBATCH_VALUE = re.compile(r"^[^\s\x00-\x1f\x7f]+$")


def check_settings(launcher) -> None:
    """UserError for settings that cannot work together (each key's own type and range
    are the schema's, resexp/settings/schema.py), or that sbatch cannot take."""
    if launcher.signal_delay_s >= 60 * launcher.time_min:
        raise UserError(f"launcher.signal_delay_s ({launcher.signal_delay_s}) must be shorter than the time "
                        f"limit launcher.time_min ({launcher.time_min} min)")
    named = {f"launcher.{k}": launcher[k] for k in ("partition", "account", "qos", "log_folder")}
    for key, value in OmegaConf.to_container(launcher.sbatch).items():
        if not SBATCH_KEY.match(str(key)):
            raise UserError(f"launcher.sbatch: {str(key)!r} is not an sbatch option name")
        named[f"launcher.sbatch.{key}"] = value
    for key, value in named.items():
        if value is not None and not isinstance(value, (bool, int, float)) and \
                not (isinstance(value, str) and SBATCH_VALUE.match(value)):
            raise UserError(f"{key}={value!r}: an sbatch value is one word of printable characters")


def executor_parameters(launcher, job_name: str) -> dict:
    """submitit SlurmExecutor parameters (its own names; mem in GB) for these settings."""
    params = {
        "job_name": job_name,
        "time": int(launcher.time_min),
        "cpus_per_task": int(launcher.cpus_per_run),
        "array_parallelism": int(launcher.array_parallelism),
        "signal_delay_s": int(launcher.signal_delay_s),
        "wckey": None,  # submitit would set its own name as the job's wckey; leave it to the site
        # --requeue: the job may be requeued (at its time limit, on preemption) even where
        # the cluster's JobRequeue default says no.
        "additional_parameters": {"requeue": True, **OmegaConf.to_container(launcher.sbatch)},
    }
    for key in ("partition", "account", "qos"):
        if launcher[key]:
            params[key] = launcher[key]
    if launcher.gpus_per_run:
        params["gpus_per_node"] = int(launcher.gpus_per_run)
    if launcher.mem_gb is not None:  # sbatch takes 16GB, not 16.0 (submitit converts only in its AutoExecutor)
        params["mem"] = _convert_mem(float(launcher.mem_gb))
    return params


def log_folder(launcher, out: Path, ready: bool = False) -> Path:
    """Where submitit and SLURM write a job's script, pickles and logs: the user's own
    launcher.log_folder, else <out>/.slurm (the results folder itself may be a link; .slurm
    is not followed). ``ready``: before submitit writes anything, <out>/.slurm is made a
    real folder holding no received link (jobs.real_slurm_dir)."""
    if launcher.log_folder:
        return Path(launcher.log_folder).expanduser().resolve()
    out = Path(out).resolve()
    return real_slurm_dir(out) if ready else slurm_dir(out)


# ---- GPUs: a cluster without them refuses every job that asks for one (shipped: gpus_per_run 1)


def gpus_listed(sinfo: str, partition: str | None) -> bool | None:
    """Whether sinfo's ``%P %G`` lines (partition, its nodes' GRES) show a GPU on
    ``partition`` (comma-separated, or None for the default one, starred by sinfo); None
    where they do not name it. A GRES is e.g. ``gpu:4``, ``gpu:a100:4(S:0-1)``,
    ``gpu:2,mps:200`` or ``(null)``."""
    wanted = set(partition.split(",")) if partition else None
    gres = [g for name, _, g in (line.strip().partition(" ") for line in sinfo.splitlines())
            if (name.rstrip("*") in wanted if wanted else name.endswith("*"))]
    if not gres:
        return None
    items = (item.split(":") for g in gres for item in re.sub(r"\([^)]*\)", "", g).split(","))
    return any(fields[0].strip() == "gpu" and fields[-1].strip() != "0" for fields in items)


def check_gpus(launcher) -> None:
    """UserError before any submission where jobs ask for GPUs and sinfo lists none on their
    partition: sbatch would refuse every one ('Invalid generic resource')."""
    if not launcher.gpus_per_run:
        return
    listed = ask("sinfo", "-h", "-o", "%P %G")  # None, no answer: sbatch will say
    if listed is not None and gpus_listed(listed, launcher.partition) is False:
        where = f"partition {launcher.partition}" if launcher.partition else "the default partition"
        raise UserError(f"each job asks for {launcher.gpus_per_run} GPU (launcher.gpus_per_run="
                        f"{launcher.gpus_per_run}), but sinfo lists no GPU on {where}: set "
                        f"launcher.gpus_per_run=0 to train on its CPUs, or launcher.partition=NAME for one with GPUs")


def sbatch_preview(launcher, out: Path, runs) -> str:
    """What --dry-run shows: the #SBATCH lines of the submission and the run of each array task."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = executor_parameters(launcher, f"resexp-{Path(out).name}")
    folder = log_folder(launcher, out)
    script = _make_sbatch_string(command="", folder=folder, map_count=len(runs) if len(runs) > 1 else None,
                                 **params)
    what = f"{len(runs)} runs as one job array" if len(runs) > 1 else "1 run as one job"
    gpus = f"{launcher.gpus_per_run} GPU" if launcher.gpus_per_run else "no GPU"
    lines = [f"would submit {what} ({gpus} per job: launcher.gpus_per_run={launcher.gpus_per_run}), "
             f"logs in {folder}:"]
    lines += [line for line in script.splitlines() if line.startswith("#SBATCH")]
    lines += [f"  {f'array task {k}' if len(runs) > 1 else 'job'}: {r.run.path.name}" for k, r in enumerate(runs)]
    return "\n".join(lines)


# ---- the job


class TrainJob(Checkpointable):
    """One run, as the call a SLURM job makes. ``checkpoint()`` (submitit's, inherited)
    resubmits the same call at the time limit or on preemption: all the state a resumed
    run needs is in its folder (checkpoint.pt), none in this object."""

    def __init__(self, cfg_yaml: str, out: str, code_dirs: Sequence[str] = (), origin=None):
        self.cfg_yaml = cfg_yaml
        self.out = out
        self.code_dirs = list(code_dirs)  # --config-dir folders, for a dataset class defined there
        self.origin = origin  # the run's folder name and the sweep's command (resexp.run.folder.Origin)

    def __call__(self) -> str:
        # SLURM sends SIGTERM when it is about to kill the job anyway (scancel, scontrol
        # requeue, preemption, the end of the time limit). submitit ignores it; this job
        # stops at once instead: the last finished epoch is on disk, and the run folder is
        # free for whichever job continues it.
        signal.signal(signal.SIGTERM, _exit_now)
        make_importable(self.code_dirs)
        console = Console(stderr=True, soft_wrap=True)
        return str(train_run(OmegaConf.create(self.cfg_yaml), Path(self.out), console, origin=self.origin))


def _exit_now(signum, frame) -> None:
    print(f"resexp: {signal.Signals(signum).name} received; stopping (the run resumes from its last epoch)",
          file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


# ---- submission


def submit(runs, out: Path, launcher) -> list[dict]:
    """Submit one job per run (one array for all of them); return their records.
    ``runs`` are PlannedRuns still to train; ``out`` is the sweep folder."""
    import submitit

    out = Path(out).resolve()
    check_gpus(launcher)
    try:
        executor = submitit.SlurmExecutor(folder=log_folder(launcher, out, ready=True),
                                          max_num_timeout=int(launcher.max_requeues))
    except RuntimeError as err:  # submitit: no srun on this machine
        raise UserError(f"cannot submit to SLURM here: {err}") from err
    try:
        executor.update_parameters(**executor_parameters(launcher, f"resexp-{out.name}"))
    except ValueError as err:
        raise UserError(f"launcher.sbatch: {str(err).splitlines()[0]}") from err
    jobs = []
    try:
        # submitit prints sbatch's complaint before raising it: keep it for the one error line
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            for r in runs:
                jobs.append(executor.submit(TrainJob(OmegaConf.to_yaml(r.cfg), str(out), importable_dirs(), r.origin)))
    except Exception as err:  # sbatch refused (partition, account, ...): its message, one line
        hint = "--dry-run shows the #SBATCH lines"
        if launcher.gpus_per_run and "gres" in str(err).lower():  # a cluster, or partition, without GPUs
            hint = f"each job asks for {launcher.gpus_per_run} GPU: launcher.gpus_per_run=0 asks for none"
        raise UserError(f"sbatch failed: {_first_line(err)} ({hint})") from err
    records = [{"run": r.run.path.name, "job_id": str(job.job_id), "submitted": now(),
                "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}
               for r, job in zip(runs, jobs, strict=True)]
    append_records(out, records)
    return records


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    errors = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()]
    return (errors or text.splitlines() or [type(err).__name__])[-1]


def to_submit(runs, out: Path) -> tuple[list, dict[str, str], dict[str, str]]:
    """Of the PlannedRuns still to train: (those to submit, {run: job id} of those whose
    recorded job is still queued or running, {run: who} of those another live process
    trains). A job for either of the last two would only start to skip its run."""
    records = read_records(out)
    jobs = (queue() or {}) if records else {}
    waiting, elsewhere = {}, {}
    for r in runs:
        record = records.get(r.run.name)
        if record is not None and is_active(jobs.get(record["job_id"])):
            waiting[r.run.name] = record["job_id"]
        elif r.status == Status.RUNNING:
            elsewhere[r.run.name] = r.state.owner.describe()
    return [r for r in runs if r.run.name not in waiting and r.run.name not in elsewhere], waiting, elsewhere


def skipped_lines(waiting: dict[str, str], elsewhere: dict[str, str]) -> list[str]:
    return [*(f"{name}: already queued as job {job}, not submitted again" for name, job in waiting.items()),
            *(f"{name}: being trained by {who}, not submitted" for name, who in elsewhere.items())]


class SlurmLauncher:
    """The launcher (launch.Launcher) that submits one job per run; with ``wait`` it
    follows them until they end. ``cfg``: the launcher section of the run config."""

    type, jobs = "slurm", 1
    interrupted = "interrupted: submitted jobs go on; see resexp status {out}"

    def __init__(self, cfg, wait: bool):
        self.cfg, self.wait = cfg, wait

    def dry_run(self, runs, out: Path) -> str:
        """What --dry-run shows beyond the plan: the runs left alone and the sbatch parameters."""
        todo, waiting, elsewhere = to_submit(runs, out)
        lines = skipped_lines(waiting, elsewhere)
        lines.append(sbatch_preview(self.cfg, out, todo) if todo else "nothing to submit")
        if todo:
            try:
                check_gpus(self.cfg)
            except UserError as err:
                lines.append(f"sbatch would refuse them: {err}")
        return "\n".join(lines)

    def launch(self, runs, out: Path, console: Console) -> dict[str, Status] | None:
        """Submit one job per run; {run name: final status} with --wait, else None once the
        jobs are submitted."""
        todo, waiting, elsewhere = to_submit(runs, out)
        for line in skipped_lines(waiting, elsewhere):
            console.print(line, markup=False)  # names the lock's owner: text from the run folder
        records = submit(todo, out, self.cfg) if todo else []
        lines = [f"{r['run']}: job {r['job_id']}" for r in records]
        if records:
            lines.append(f"logs: {Path(records[0]['stderr']).parent}/<job id>_0_log.err (and .out)")
        print("\n".join(lines or ["nothing to submit"]), flush=True)
        if not self.wait:
            return None
        known = read_records(out)
        followed = {name: known[name] for name in [*waiting, *(r["run"] for r in records)]}
        states = follow([r for r in runs if r.run.name in followed], followed, console)
        for line in unfinished_lines(states, followed):
            console.print(line, style="red", markup=False)
        return {**{name: Status.BUSY for name in elsewhere}, **states}


# ---- following a sweep (--wait)


def follow(runs, records: dict[str, dict], console: Console) -> dict[str, str]:
    """Show one overall progress line until no job of ``records`` is queued or running and
    no other trainer holds one of their runs (a job that found its run trained by another
    sweep ends at once; that run is followed until it ends too). Returns {run name: final
    state}, ``unfinished`` where the run ended before it was done. ``runs`` are the
    PlannedRuns of the jobs (their cost weighs the ETA)."""
    by_name = {r.run.path.name: r for r in runs}
    overall, task = sweep_progress(console, runs)
    start, failures = time.monotonic(), 0
    with overall:
        while True:
            jobs = queue()
            failures = failures + 1 if jobs is None else 0
            if failures > 20:
                raise UserError("squeue keeps failing; the jobs go on: follow them with resexp status")
            jobs = jobs or {}
            active = {n: jobs.get(rec["job_id"]) for n, rec in records.items()}
            overall.update(task, completed=_spent(by_name.values()),
                           description=_describe(active, len(records)))
            if failures == 0 and not any(is_active(j) for j in active.values()) and \
                    not any(r.run.state().status == Status.RUNNING for r in by_name.values()):
                break
            time.sleep(min(MAX_POLL_S, 1.0 + 0.1 * (time.monotonic() - start)))
    states = {name: r.run.state().status for name, r in by_name.items()}
    return {name: s if s.finished or s == Status.FAILED else Status.UNFINISHED for name, s in states.items()}


def _spent(runs) -> float:
    """Estimated seconds of training done so far, from each run's metrics (cost-weighted)."""
    spent = 0.0
    for r in runs:
        rows = r.run.read_rows()
        done = int(rows[-1]["iteration"]) if rows else 0
        left_at_plan = max(r.iterations - r.iterations_done, 1)
        spent += r.cost_s * min(max(done - r.iterations_done, 0) / left_at_plan, 1.0)
    return spent


def _describe(active: dict, n: int) -> str:
    running = sum(1 for j in active.values() if j is not None and j["state"] == "RUNNING")
    queued = sum(1 for j in active.values() if is_active(j)) - running
    return f"sweep: {running} running, {queued} queued, {n - running - queued} ended, of {n} jobs"


def unfinished_lines(states: dict[str, str], records: dict[str, dict]) -> list[str]:
    """One line per run whose job ended before it did: the job's final state and its log."""
    lost = (Status.UNFINISHED, Status.FAILED)
    ended = ended_states(records[n]["job_id"] for n, s in states.items() if s in lost)
    return [f"{name}: {s}, job {records[name]['job_id']} "
            f"{ended.get(records[name]['job_id'], 'ended')}; log {inert(records[name]['stderr'])}"
            for name, s in states.items() if s in lost]
