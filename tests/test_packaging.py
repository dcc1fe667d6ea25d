"""The set-up files agree with each other: pyproject, environment.yml, README, .ci/run, notebooks."""

import json
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # pip name -> conda name


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"], "environment.yml must name its channels"
    deps = env["dependencies"]
    conda = dict(_split(d) for d in deps if isinstance(d, str))
    pip_section = [d for d in deps if isinstance(d, dict) and "pip" in d]
    assert "pip" in conda, "environment.yml needs pip to install the package itself"
    assert pip_section and "-e ." in pip_section[0]["pip"], "environment.yml must install the package (-e .)"
    assert conda.get("python") == ">=" + project["requires-python"].lstrip(">=")
    wanted = {CONDA_NAMES.get(n, n): spec for n, spec in map(_split, project["dependencies"])}
    listed = {n: s for n, s in conda.items() if n not in ("python", "pip")}
    assert listed == wanted, f"environment.yml {listed} != pyproject.toml {wanted}"


def test_torch_is_not_pinned_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = [d for d in project["dependencies"] if d.startswith("torch")]
    assert torch_req and "==" not in torch_req[0], "the torch pin belongs to CI (TORCH_SPEC), not to users"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test\s*$", ci, re.M)
    assert "make lab" in readme


def test_console_script_and_dev_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["llama2-lab"] == "llama2_lab.cli:main"
    dev = {_split(d)[0] for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "hypothesis", "pyyaml", "transformers", "playwright"} <= dev


def test_notebooks_are_committed_without_outputs():
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{nb_path.name} cell {i} has outputs: clear them"
                assert cell.get("execution_count") is None, f"{nb_path.name} cell {i} has an execution count"
