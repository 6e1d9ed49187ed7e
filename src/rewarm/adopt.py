"""`rewarm adopt`: after `dvc pull` (or `dvc checkout`), let Snakemake take what DVC brought as done.

Files that DVC writes carry the time of the pull, in no particular order, and Snakemake has no record
of the jobs that made them: it would plan the whole grid again. Snakemake's own `--touch` records each
job whose outputs are present as finished (its metadata, with the current parameters and code) and
sets their times in the order of the workflow, without running anything. That is only right when the
files present are the ones `dvc.lock` names, so DVC is asked first (`dvc status`): an output that is
there but differs from the lock, or parameters edited since the lock, stop it with a message. Outputs
that are absent (a partial pull) are simply left to Snakemake to make.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

log = logging.getLogger(__name__)


class AdoptError(ValueError):
    """The workspace is not what dvc.lock records: adopting it would mark stale outputs as done."""


def problems(status: dict) -> list[str]:
    """What in `dvc status --json` forbids adopting: outputs present but modified, and parameters changed
    since dvc.lock. Absent outputs ('deleted', 'not in cache') and dependencies that are absent or only
    partly present are a partial pull, for Snakemake to complete."""
    found = []
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, dict):
                continue
            for path, state in (change.get("changed outs") or {}).items():
                if state == "modified":
                    found.append(f"{stage}: output {path} differs from dvc.lock")
            # DVC 3 reports a params file among the dependencies, with the changed keys: {'params.yaml': {'train': 'modified'}}
            for path, state in (change.get("changed deps") or {}).items():
                if isinstance(state, dict):
                    found.append(f"{stage}: parameters {', '.join(sorted(state))} of {path} differ from dvc.lock")
    return found


def dvc_status() -> dict:
    result = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise AdoptError(f"`dvc status` failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout or "{}")


def main(snakemake_args: list[str], cores: int) -> None:
    found = problems(dvc_status())
    if found:
        shown = found[:20] + ([f"... and {len(found) - 20} more"] if len(found) > 20 else [])
        raise AdoptError("the workspace is not what dvc.lock records, so its outputs cannot be taken as done:\n  "
                         + "\n  ".join(shown) + "\n(`dvc checkout` restores the locked outputs; commit or stash edits to "
                         "params.yaml and adopt before editing)")
    command = [sys.executable, "-m", "snakemake", "--touch", "--cores", str(cores), "--quiet", "all", *snakemake_args]
    log.info("recording DVC's outputs as done for Snakemake: %s", " ".join(command[2:]))
    result = subprocess.run(command)
    if result.returncode != 0:
        raise AdoptError(f"`snakemake --touch` failed ({result.returncode}); its messages are above")
    log.info("done: `snakemake -n` now plans only what is absent")
