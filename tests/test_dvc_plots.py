"""`dvc plots show` offline and readable: the page it writes carries its scripts (no CDN), and each of
the studies' overlays renders, with those very scripts, one line per cell named in full in a legend,
from-scratch cells in plots of their own (rendered by Node.js as a browser would, without a DOM)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from rewarm import grid
from tests.project import TEST_PARAMS, copy_project, git_commit, grid_file, run

RENDER = Path(__file__).parent / "js" / "render_vega.js"


@pytest.mark.node
def test_dvc_plots_show_draws_offline_one_line_per_cell(tmp_path):
    project = copy_project(tmp_path / "plots", TEST_PARAMS)
    cells = grid_file(project)["cells"]
    for i, name in enumerate(cells):  # curves as `rewarm evaluate` writes them, different per cell
        for corpus in ("upstream", "downstream"):
            path = project / "runs" / name / "curves" / f"{corpus}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("step,tokens,loss,ppl\n" + "".join(f"{s},{s * 512},{3 - s / 100},{20 + i - s / 10}\n" for s in (0, 10, 20)))
    git_commit(project, "project")
    run("dvc", "plots", "show", "-o", "shown", cwd=project)
    page = (project / "shown" / "index.html").read_text()
    assert not re.findall(r"<script[^>]*\bsrc=", page), "the page loads a script from elsewhere"
    scripts = re.findall(r"<script>\n(.*?)\n</script>", page, re.S)
    assert len(scripts) == 3 and "vegaEmbed" in scripts[2]  # Vega, Vega-Lite, Vega-Embed, inline
    found = [json.loads(m) for m in re.findall(r"var spec = (\{.*?\});\n", page)]
    # the overlays (rewarm's template, titled by a string) and each cell's own curves (DVC's template)
    specs = {spec["title"] if isinstance(spec["title"], str) else spec["title"]["text"]: spec for spec in found}
    assert len(specs) == len(found)
    rendered = subprocess.run(["node", str(RENDER)], input=json.dumps({"scripts": scripts[:2], "specs": list(specs.values())}),
                              capture_output=True, text=True, timeout=300)
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    svgs = dict(zip(specs, json.loads(rendered.stdout)))

    members = grid.studies(grid.load(project / "params.yaml"))
    scratch = {n for n, c in cells.items() if c["checkpoint"] == "scratch"}
    constant = {n for n, c in cells.items() if c["schedule"] == "constant"}
    as_far = {n for n in constant if cells[n]["tokens"] == cells[members["checkpoint"][0]]["tokens"]}
    expected = {
        "upstream validation perplexity, all cells": set(cells) - scratch,
        "upstream validation perplexity, from scratch": scratch,
        "downstream validation perplexity, study max lr": set(members["max_lr"]),  # its own constant baseline
        # the checkpoint study: its pre-trained starts and the no-re-warming baseline trained as far; from scratch apart
        "downstream validation perplexity, study checkpoint": set(members["checkpoint"]) - scratch | as_far,
        "downstream validation perplexity, study checkpoint from scratch": set(members["checkpoint"]) | as_far,
    }
    assert len(scratch) == 1 and len(expected["downstream validation perplexity, study checkpoint"]) == 3
    for title, names in expected.items():
        svg = svgs[title]
        # Vega draws a line per series, each in its group of line marks
        lines = "".join(re.findall(r'<g class="mark-line role-mark marks"[^>]*>(.*?)</g>', svg, re.S))
        assert lines.count("<path") == len(names), title
        legend = set(re.findall(r"<text[^>]*>([^<]*)</text>", svg))
        assert names <= legend, (title, names - legend)  # each cell's whole name: the legend cuts none
    for title, svg in svgs.items():  # from scratch only in its own plots
        shown = set(re.findall(r"<text[^>]*>([^<]*)</text>", svg))
        assert bool(shown & scratch) == ("from scratch" in title), title
