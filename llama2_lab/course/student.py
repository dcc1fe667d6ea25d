"""Instructor tools: student copies of the course notebooks, with the exercise solutions taken out.

Every exercise in the notebooks is a markdown prompt followed by one or more cells tagged
``"solution"`` (cell metadata ``tags``). A student copy replaces each tagged code cell with a
placeholder that raises ``NotImplementedError`` and each tagged markdown cell with an empty answer
box; everything else, the ``checks`` cells that test the learner's answer included, stays as it is.
All outputs are cleared, so no solution leaks through a later cell's output.

    llama2-lab course --student OUTDIR [--notebooks DIR]

or from Python::

    from llama2_lab.course import make_student_copies
    report = make_student_copies("notebooks", "student")   # one StudentCopy per notebook

The source folder is never written: ``out_dir`` must be another folder, and every file lands
atomically. The placeholder cells carry the tag ``raises-exception``, so a student copy still
runs top to bottom under ``pytest --nbval-lax`` (the checks after an unsolved exercise then fail,
as they should).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..utils.io import atomic_write_text
from ..utils.paths import NOTEBOOKS_DIR

SOLUTION_TAG = "solution"
PLACEHOLDER_TAG = "exercise-placeholder"
RAISES_TAG = "raises-exception"  # nbval and Jupyter Book let a cell with this tag raise
CODE_PLACEHOLDER = (
    "# YOUR CODE HERE\n"
    "raise NotImplementedError(\"Exercise: write your solution in this cell (see the prompt above), "
    "then run the checks below.\")"
)
MARKDOWN_PLACEHOLDER = "*Your answer here.*"


class CourseError(ValueError):
    """A request the course tools cannot carry out; the message says what to change."""


@dataclass(frozen=True)
class StudentCopy:
    """One notebook written: where from, where to, how many solution cells were replaced."""

    source: Path
    target: Path
    solutions_removed: int
    cells: int


def default_notebooks_dir() -> Path:
    """The course's ``notebooks/`` folder beside the package (a source checkout or ``pip install -e``)."""
    return NOTEBOOKS_DIR


def is_solution(cell) -> bool:
    return SOLUTION_TAG in (cell.get("metadata", {}).get("tags") or [])


def count_solutions(nb) -> int:
    """Number of cells tagged ``"solution"`` in a notebook node."""
    return sum(is_solution(c) for c in nb.cells)


def exercise_problems(nb) -> list[str]:
    """What is wrong with the exercises of a notebook: a solution with no prompt before it, etc."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if not is_solution(cell):
            continue
        # Walk back over the solution block: the first cell before it must be a markdown prompt.
        j = i - 1
        while j >= 0 and is_solution(nb.cells[j]):
            j -= 1
        if j < 0 or nb.cells[j].cell_type != "markdown":
            problems.append(f"cell {i}: a solution cell with no markdown exercise prompt before it")
        if not cell.source.strip():
            problems.append(f"cell {i}: an empty solution cell")
    return problems


def student_notebook(nb):
    """A copy of a notebook node with solutions replaced by placeholders and all outputs cleared.

    Returns (new notebook, number of cells replaced). The input is not modified.
    """
    import nbformat

    out = copy.deepcopy(nb)
    n = 0
    for idx, cell in enumerate(out.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if not is_solution(cell):
            continue
        n += 1
        tags = [t for t in cell.metadata.get("tags", []) if t != SOLUTION_TAG] + [PLACEHOLDER_TAG]
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(CODE_PLACEHOLDER)
            tags.append(RAISES_TAG)
        else:
            new = nbformat.v4.new_markdown_cell(MARKDOWN_PLACEHOLDER)
        new.metadata = {k: v for k, v in cell.metadata.items() if k != "tags"}
        new.metadata["tags"] = tags
        if "id" in cell:
            new["id"] = cell["id"]  # keep cell ids stable, so diffs against the source line up
        else:
            new.pop("id", None)
        out.cells[idx] = new
    # Widget state saved by an executed notebook could show solution results: drop it.
    out.metadata.pop("widgets", None)
    nbformat.validate(out)
    return out, n


def _same_folder(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    if a == b:
        return True
    try:
        return b.exists() and a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def make_student_copies(src_dir: str | os.PathLike, out_dir: str | os.PathLike,
                        pattern: str = "*.ipynb") -> list[StudentCopy]:
    """Write a student copy of every notebook of ``src_dir`` (matching ``pattern``) into ``out_dir``.

    Refuses to write into ``src_dir`` itself. Existing student copies of the same name in
    ``out_dir`` are replaced (atomically); nothing else there is touched.
    """
    import nbformat

    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise CourseError(f"no notebooks folder at {src}: pass the course's notebooks/ folder (--notebooks DIR).")
    if _same_folder(src, out):
        raise CourseError(f"the output folder {out} is the notebooks folder itself: student copies would "
                          "overwrite the solutions. Choose another folder, e.g. --student student_notebooks.")
    if out.exists() and not out.is_dir():
        raise CourseError(f"{out} exists and is not a folder; choose a folder for the student copies.")
    sources = sorted(p for p in src.glob(pattern) if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    if not sources:
        raise CourseError(f"no notebooks matching {pattern!r} in {src}.")
    # Read and transform everything first: a broken notebook stops the run before anything is written.
    planned = []
    for path in sources:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as e:  # nbformat raises several kinds (JSON, validation)
            raise CourseError(f"{path} is not a readable notebook ({type(e).__name__}: {e}).") from None
        student, n = student_notebook(nb)
        planned.append((path, out / path.name, student, n))
    out.mkdir(parents=True, exist_ok=True)
    report = []
    for path, target, student, n in planned:
        atomic_write_text(target, nbformat.writes(student))
        report.append(StudentCopy(path, target, n, len(student.cells)))
    return report


def format_report(report: list[StudentCopy]) -> str:
    width = max(len(r.source.name) for r in report)
    lines = [f"{r.source.name:<{width}}  {r.solutions_removed:>2} solution cell(s) replaced" for r in report]
    total = sum(r.solutions_removed for r in report)
    lines.append(f"{len(report)} notebook(s), {total} solution cell(s) replaced -> {report[0].target.parent}")
    return "\n".join(lines)


# --- command line (wired into `llama2-lab course` by cli.py) --------------------------------------
def add_course_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--student", metavar="OUTDIR", required=True,
                        help="write student copies (solutions replaced by placeholders) into this folder")
    parser.add_argument("--notebooks", metavar="DIR", default=None,
                        help=f"the course notebooks to copy (default: {default_notebooks_dir()})")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    src = Path(args.notebooks) if args.notebooks else default_notebooks_dir()
    try:
        report = make_student_copies(src, args.student)
    except CourseError as e:
        print(f"llama2-lab course: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llama2_lab.course", description=__doc__.split("\n")[0])
    add_course_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
