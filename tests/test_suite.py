"""The suite's own machinery: the README's `-n 2` keeps each xdist group on one worker.

conftest.py puts every test that reads the Snakemake run in one group, so that one worker makes the
run once. If pytest-xdist drops the groups (as it does silently under pytest 9.2, pytest-dev/
pytest-xdist#1386), the run is made on both workers and CI grows by minutes without failing: this
test fails instead."""

from __future__ import annotations

import re
import subprocess
import sys

GROUPED = '''
import pytest

@pytest.mark.xdist_group("{group}")
@pytest.mark.parametrize("i", range(4))
def test_{name}(i):
    pass
'''


def test_an_xdist_group_runs_on_one_worker(tmp_path):
    for name, group in (("a", "together"), ("b", "together"), ("c", "apart")):
        (tmp_path / f"test_{name}.py").write_text(GROUPED.format(group=group, name=name))
    run = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
                          "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # `[gw0] [  8%] PASSED test_a.py::test_a[0]@together`: worker, then the test's file
    workers: dict[str, set[str]] = {}
    for worker, name in re.findall(r"\[(gw\d)\][^\n]*?PASSED \S*test_(\w)\.py::", run.stdout):
        workers.setdefault(name, set()).add(worker)
    assert sorted(workers) == ["a", "b", "c"], run.stdout
    assert len(workers["a"] | workers["b"]) == 1, f"the group 'together' was split over workers: {workers}\n{run.stdout}"
    assert len(workers["c"]) == 1, workers
