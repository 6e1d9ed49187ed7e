"""The documentation: the configuration reference is generated from the schema and up to date, the
MkDocs site builds in strict mode (a broken link between pages fails it), and the README's links lead
to pages that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.project import ROOT, run_env

sys.path.insert(0, str(ROOT / "scripts"))
import config_reference  # noqa: E402


def test_configuration_reference_is_generated_from_the_schema():
    assert (ROOT / "docs/reference/configuration.md").read_text() == config_reference.render(), \
        "run `python scripts/config_reference.py --write`"
    assert config_reference.undocumented() == []  # every field of every section says what it is


def mkdocs(project, *args):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(project / "site"), *args], cwd=project, env=run_env(), capture_output=True, text=True)


def test_docs_build_strictly_and_a_broken_link_fails_them(tmp_path):
    project = tmp_path / "docs-build"
    project.mkdir()
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    built = mkdocs(project)
    assert built.returncode == 0, built.stderr
    assert (project / "site/reference/configuration/index.html").exists()
    with open(project / "docs/faults.md", "a") as page:
        page.write("\nSee [the missing page](missing.md).\n")
    broken = mkdocs(project)
    assert broken.returncode != 0 and "missing.md" in broken.stderr


def test_readme_links_lead_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []
    assert len(readme.splitlines()) <= 200
