"""A sweep's SLURM jobs as files and queue entries: <out>/.slurm/jobs.jsonl and squeue/sacct.

What `resexp status` and the SLURM launcher both read. It imports neither submitit nor
torch, so `status` answers at once; submitting jobs is resexp/sweep/slurm.py's.
"""

from __future__ import annotations

import getpass
import json
import re
import subprocess
from pathlib import Path

from resexp.run import safeio
from resexp.run.files import DamagedFile, parse_json, read_bytes
from resexp.run.folder import RUN_NAME

JOBS_FILE = "jobs.jsonl"
# squeue states of a job that will still train: queued, starting, running or held.
# COMPLETING is not among them: that job is being killed (scancel) or has ended.
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT")

# The one kind of link submitit leaves in its folder: the name its sbatch script had
# before the job id was known, pointing at <job id>_submission.sh.
SUBMITIT_LINK = re.compile(r"^\.submission_file_[0-9a-f]{32}\.sh$")


def slurm_dir(out: Path) -> Path:
    return Path(out) / ".slurm"


def real_slurm_dir(out: Path) -> Path:
    """<out>/.slurm as a folder to write into, checked before anything is written or
    submitted: created if missing; LinkRefused if it, or any entry in it but submitit's
    own links, is a link. SLURM and submitit write a job's logs and result pickle to
    names made of its job id, which the next job id may well be: a link received under
    such a name would lead those writes out of the folder."""
    folder = safeio.real_dir(slurm_dir(out))
    for entry in folder.iterdir():
        if entry.is_symlink() and not SUBMITIT_LINK.match(entry.name):
            raise safeio.LinkRefused(entry)
    return folder


def append_records(out: Path, records: list[dict]) -> None:
    """One line per job, written in one append: two sweeps submitting at once keep whole lines."""
    folder = real_slurm_dir(out)
    safeio.append(folder / JOBS_FILE, "".join(json.dumps(r) + "\n" for r in records).encode())


JOB_ID = re.compile(r"^\d+(_\d+)?$")
RECORD_TEXT = ("run", "job_id", "stdout", "stderr")


def read_records(out: Path) -> dict[str, dict]:
    """The latest job record of each run of the sweep in ``out`` ({} when none). A last line
    cut short is left out; any other line that is not a job record, or a file larger than
    any sweep writes, is DamagedFile (one line)."""
    path = slurm_dir(out) / JOBS_FILE
    data = read_bytes(path)
    lines = (data or b"").split(b"\n")
    lines.pop()  # after the last newline: empty, or a line cut short
    latest = {}
    for number, line in enumerate(lines, 1):
        record = _record(path, line)
        if record is None:
            raise DamagedFile(path, f"line {number} is not a job record; delete that line (or the file, "
                                    f"which only lists the sweep's jobs)")
        latest[record["run"]] = record
    return latest


def _record(path: Path, line: bytes) -> dict | None:
    """One job record as append_records writes it, or None."""
    try:
        record = parse_json(path, line.decode("utf-8"))
    except (DamagedFile, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in RECORD_TEXT):
        return None
    if not JOB_ID.match(record["job_id"]) or not RUN_NAME.match(record["run"]):
        return None
    return record


def ask(*command: str) -> str | None:
    """What a SLURM command (squeue, sacct, sinfo) prints; None where it is missing or fails."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def queue() -> dict[str, dict] | None:
    """This user's jobs in the SLURM queue: {job id: {state, node, reason}}, one entry per
    array task; None when squeue is missing or fails."""
    listed = ask("squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%N|%r")
    if listed is None:
        return None
    jobs = {}
    for line in listed.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            jobs[parts[0]] = {"state": parts[1], "node": parts[2], "reason": parts[3]}
    return jobs


def ended_states(job_ids) -> dict[str, str]:
    """Final states (COMPLETED, CANCELLED, TIMEOUT, ...) of jobs no longer queued, from sacct;
    {} where the cluster keeps no accounting."""
    ids = sorted(set(job_ids))
    listed = ask("sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)) if ids else None
    states = {}
    for line in (listed or "").splitlines():
        job_id, _, state = line.partition("|")
        if job_id in ids:
            states[job_id] = state.split()[0] if state else "?"  # "CANCELLED by 0" -> CANCELLED
    return states


def is_active(job: dict | None) -> bool:
    return job is not None and job["state"] in ACTIVE
