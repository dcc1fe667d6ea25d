"""What keeps the repository honest: notebooks committed without outputs, one version string, a README
layout table that names every module, and no notes from outside the repository in the code."""

import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib

import llama2_lab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} hold outputs; clear them with "
        f"`jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)}`"
    )


def test_one_version_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # read from llama2_lab.__version__
    assert version("llama2-lab") == llama2_lab.__version__


def test_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    package = ROOT / "llama2_lab"
    modules = [
        p.relative_to(package).with_suffix("").as_posix()
        for p in package.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    ]
    missing = [m for m in modules if f"`{m.split('/')[-1]}`" not in readme]
    assert not missing, f"README's layout table does not name: {missing}"


def test_code_cites_sources_not_outside_notes():
    # The project speaks for itself: no references to notes outside the repository.
    pattern = re.compile(r"FACTS ?§|FACTS\.md|DESIGN\.md|STYLE\.md|\bsession \d")
    files = [
        *ROOT.joinpath("llama2_lab").rglob("*.py"),
        *ROOT.joinpath("notebooks").glob("*.ipynb"),
        *ROOT.joinpath("scripts").glob("*"),
        ROOT / "README.md",
        *ROOT.joinpath("benchmarks").glob("*"),
    ]
    hits = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in files
        if p.is_file()
        for m in pattern.finditer(p.read_text(errors="replace"))
    ]
    assert not hits, hits
