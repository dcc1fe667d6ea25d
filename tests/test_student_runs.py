"""The learner's side of the course, run for real: each student copy top to bottom, then the same copy with the
solutions put back, in the learner's mode (no LLAMA2_LAB_FAST: the sizes a learner's Run All meets).

Per notebook:
1. every build a check verifies is a skeleton + a cell tagged ``solution`` (``course.untagged_builds``);
2. the student copy runs top to bottom (cells tagged ``raises-exception`` may raise; nothing else may), and
   every build's check says "not written yet" and hands over the package's version;
3. the student copy with the solutions put back is the instructor's notebook, cell for cell; it runs top to
   bottom in learner mode and every check passes ("Using your ...", never "Using the package's ...");
4. no output of a solution cell (a line it prints) shows up in a later cell of the student copy's run.

The instructor's notebooks themselves run in fast mode under nbval (`make test`), so every notebook runs in
both modes. LLAMA2_LAB_STUDENT_RUNS=0 skips this module (e.g. for a quick local run).
"""

import os
from pathlib import Path

import nbformat
import pytest

from llama2_lab.course import student as course

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
# seconds per cell: 07's training cell takes ~2 minutes on an idle 2-core machine, 10 on a busy one
TIMEOUT = int(os.environ.get("LLAMA2_LAB_CELL_TIMEOUT", "1800"))

pytestmark = pytest.mark.skipif(
    os.environ.get("LLAMA2_LAB_STUDENT_RUNS") == "0", reason="LLAMA2_LAB_STUDENT_RUNS=0: student-copy runs skipped"
)


def _env(fast: bool) -> dict:
    env = dict(os.environ)
    env.pop("LLAMA2_LAB_FAST", None)
    if fast:
        env["LLAMA2_LAB_FAST"] = "1"
    root = str(NOTEBOOKS.parent)  # the kernel imports this tree's package, as the test process does
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("MPLBACKEND", "agg")
    return env


def _execute(nb, fast: bool, what: str = ""):
    """Run a notebook node in a fresh kernel in notebooks/; -> the executed node. Raises on an error in a cell
    without the raises-exception tag (nbclient's rule, the same as nbval's and JupyterLab's Run All).
    With LLAMA2_LAB_TIMINGS=FILE set, a line "what mode seconds" is appended to FILE."""
    import time

    from nbclient import NotebookClient

    client = NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    t0 = time.perf_counter()
    client.execute(env=_env(fast))
    if os.environ.get("LLAMA2_LAB_TIMINGS"):
        with open(os.environ["LLAMA2_LAB_TIMINGS"], "a") as f:
            f.write(f"{what} {'fast' if fast else 'learner'} {time.perf_counter() - t0:.1f}\n")
    return nb


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            parts.append(
                data.get("text/plain", "") + "\n" + data.get("text/html", "") + "\n" + data.get("text/markdown", "")
            )
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "\n".join(parts)


def _solution_lines(nb) -> list[tuple[int, str]]:
    """(cell index, line) for the distinctive lines solution cells print: long enough to mean something, not a
    progress bar or markup."""
    lines = []
    for i, c in enumerate(nb.cells):
        if course.is_solution(c) and c.cell_type == "code":
            for line in _text(c).splitlines():
                line = line.strip()
                if len(line) >= 12 and "it/s" not in line and "%|" not in line and not line.startswith("<"):
                    lines.append((i, line))
    return lines


def _leaks(done, ran) -> list[str]:
    """Lines a solution printed (in ``done``, the instructor's cell order) that a *later* cell of the student
    copy's run (``ran``) shows too."""
    order = {c["id"]: i for i, c in enumerate(done.cells)}
    out = []
    for i, line in _solution_lines(done):
        later = "\n".join(_text(c) for c in ran.cells if order.get(c["id"], -1) > i)
        if line in later:
            out.append(line)
    return out


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_builds_are_solutions(path):
    nb = nbformat.read(path, as_version=4)
    assert course.untagged_builds(nb) == []
    assert course.exercise_problems(nb) == []


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_student_copy_runs_and_solutions_put_back_pass(path):
    instructor = nbformat.read(path, as_version=4)
    student, _ = course.student_notebook(instructor)
    builds = course.checked_builds(instructor)

    ran = _execute(nbformat.from_dict(student), fast=False, what=f"{path.stem} student-copy")
    student_out = "\n".join(_text(c) for c in ran.cells)
    for line in student_out.splitlines():  # a check line for a build never says it passed
        assert not line.startswith("Using your "), (path.name, line)
    if builds:
        assert "not written yet — fill in the TODO cell above" in student_out, path.name
        assert student_out.count("Using the package's") >= 1, path.name

    back = course.put_solutions_back(student, instructor)
    assert [(c["id"], c.source) for c in back.cells] == [(c["id"], c.source) for c in instructor.cells]
    done = _execute(back, fast=False, what=f"{path.stem} solutions-put-back")
    done_out = "\n".join(_text(c) for c in done.cells)
    assert "not written yet" not in done_out and "Using the package's" not in done_out, path.name

    leaks = _leaks(done, ran)
    assert leaks == [], f"{path.name}: solution output shown in a later cell of the student copy: {leaks[:3]}"


def test_leak_detector_sees_a_later_cell_only():
    """The leak check itself: a solution's printed line in a later cell is a leak, in an earlier one it is not."""
    out = lambda text: [nbformat.v4.new_output("stream", name="stdout", text=text)]
    cells = [
        nbformat.v4.new_code_cell("print('the answer is 4,2,42')"),
        nbformat.v4.new_markdown_cell("**Exercise**"),
        nbformat.v4.new_code_cell("x = answer()", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("print(x)"),
    ]
    done = nbformat.v4.new_notebook(cells=cells)
    done.cells[0].outputs = out("the answer is 4,2,42\n")
    done.cells[2].outputs = out("the answer is 4,2,42\n")
    ran = nbformat.from_dict(done)
    ran.cells = [ran.cells[0], ran.cells[1], ran.cells[3]]
    ran.cells[2].outputs = []
    assert _leaks(done, ran) == []  # shown before the exercise: not a leak
    ran.cells[2].outputs = out("the answer is 4,2,42\n")
    assert _leaks(done, ran) == ["the answer is 4,2,42"]
