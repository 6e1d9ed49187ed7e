"""`rewarm adopt`'s reading of `dvc status --json` (the shapes DVC 3 prints, written out by hand): absent outputs
and partly present dependencies are a partial pull; a modified output or changed parameters forbid adopting."""

from __future__ import annotations

import pytest

from rewarm import adopt


def test_a_partial_pull_may_be_adopted():
    status = {
        "prepare@news-0": [{"changed outs": {"data/parts/news/0": "not in cache"}}],
        "evaluate@c": [{"changed deps": {"data/tokens": "modified"}}, {"changed outs": {"evals/cells/c.json": "deleted"}}],
        "benchmark_base@early": [{"changed deps": {"data/tasks": "deleted"}}],
    }
    assert adopt.problems(status) == []
    assert adopt.problems({}) == []


@pytest.mark.bad_input
def test_modified_outputs_and_changed_params_are_named():
    status = {
        "train@c": [{"changed outs": {"runs/c/metrics.json": "modified", "runs/c/model": "deleted"}}],
        "pretrain@series": [{"changed deps": {"params.yaml": {"pretrain": "modified"}, "data/tokens": "modified"}}],
    }
    assert adopt.problems(status) == ["train@c: output runs/c/metrics.json differs from dvc.lock",
                                      "pretrain@series: parameters pretrain of params.yaml differ from dvc.lock"]
