"""Instructor tools: student copies of the course notebooks, with the solutions taken out.

Two kinds of learner work carry the cell tag ``"solution"`` (cell metadata ``tags``):

* a **build**: a skeleton code cell (signature, shapes in comments, ``raise NotImplementedError("TODO: ...")``;
  optionally tagged ``"skeleton"``) followed by the full solution in cell(s) tagged ``"solution"``. A student
  copy keeps the skeleton and **drops** the solution cells: the check after it then reports "not written yet"
  and the notebook goes on with the package's version, so the copy runs top to bottom.
* an **exercise**: a markdown prompt followed directly by tagged cells. A student copy replaces each tagged
  code cell with a placeholder that raises ``NotImplementedError`` and each tagged markdown cell with an answer
  box. The placeholder and the ``"checks"`` cells right after it carry ``raises-exception``, so Run All
  (JupyterLab does not stop on a cell with that tag) and ``pytest --nbval-lax`` go on past an exercise not done.

All outputs are cleared, so no solution leaks through a later cell's output.

    llama2-lab course --student OUTDIR [--notebooks DIR]

or from Python::

    from llama2_lab.course import make_student_copies, put_solutions_back
    report = make_student_copies("notebooks", "student")      # one StudentCopy per notebook
    answer_key = put_solutions_back(student_nb, instructor_nb)  # the solutions re-inserted, by cell id

The source folder is never written: ``out_dir`` must be another folder, and every file lands atomically.
The tags and what they mark live in ``tags.py``, the audits the tests run on the builds in ``audit.py``;
both are importable from here too.
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
from .audit import checked_builds, untagged_builds
from .tags import (
    CHECKS_TAG,
    PLACEHOLDER_TAG,
    RAISES_TAG,
    SKELETON_TAG,
    SOLUTION_TAG,
    count_solutions,
    exercise_problems,
    is_skeleton,
    is_solution,
    solution_blocks,
)

__all__ = [
    "CHECKS_TAG",
    "CODE_PLACEHOLDER",
    "MARKDOWN_PLACEHOLDER",
    "PLACEHOLDER_TAG",
    "RAISES_TAG",
    "SKELETON_TAG",
    "SOLUTION_TAG",
    "CourseError",
    "StudentCopy",
    "add_course_arguments",
    "checked_builds",
    "count_solutions",
    "default_notebooks_dir",
    "exercise_problems",
    "format_report",
    "is_skeleton",
    "is_solution",
    "main",
    "make_student_copies",
    "put_solutions_back",
    "run_from_args",
    "student_notebook",
    "untagged_builds",
]

CODE_PLACEHOLDER = (
    "# YOUR CODE HERE\n"
    'raise NotImplementedError("Exercise: write your solution in this cell (see the prompt above), '
    'then run the checks below.")'
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


def _add_tag(cell, tag: str) -> None:
    tags = list(cell.metadata.get("tags") or [])
    if tag not in tags:
        cell.metadata["tags"] = tags + [tag]


def _placeholder(cell):
    import nbformat

    tags = [t for t in cell.metadata.get("tags", []) if t != SOLUTION_TAG] + [PLACEHOLDER_TAG]
    if cell.cell_type == "code":
        new = nbformat.v4.new_code_cell(CODE_PLACEHOLDER)
        tags.append(RAISES_TAG)
    else:
        new = nbformat.v4.new_markdown_cell(MARKDOWN_PLACEHOLDER)
    new.metadata = {k: v for k, v in cell.metadata.items() if k != "tags"}
    new.metadata["tags"] = tags
    if "id" in cell:
        new["id"] = cell["id"]  # keep cell ids stable: put_solutions_back and diffs line up
    else:
        new.pop("id", None)
    return new


def student_notebook(nb):
    """A copy of a notebook node with the solutions out and all outputs cleared.

    Build solutions (after a skeleton) are dropped; exercise solutions become placeholders. Returns
    (new notebook, number of solution cells taken out). The input is not modified.
    """
    import nbformat

    src = copy.deepcopy(nb)
    blocks = {first: (last, skeleton) for first, last, skeleton in solution_blocks(src)}
    cells, n, i = [], 0, 0
    while i < len(src.cells):
        if i not in blocks:
            cell = src.cells[i]
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
            cells.append(cell)
            i += 1
            continue
        last, skeleton = blocks[i]
        n += last - i
        if not skeleton:
            cells += [_placeholder(c) for c in src.cells[i:last]]
            k = last  # the checks right after an unsolved exercise fail: let Run All go on past them
            while k < len(src.cells) and CHECKS_TAG in (src.cells[k].metadata.get("tags") or []):
                _add_tag(src.cells[k], RAISES_TAG)
                k += 1
        i = last
    src.cells = cells
    # Widget state saved by an executed notebook could show solution results: drop it.
    src.metadata.pop("widgets", None)
    nbformat.validate(src)
    return src, n


def put_solutions_back(student, instructor):
    """The student copy with the instructor's solution cells re-inserted (outputs cleared).

    Cells are matched by id: each solution cell of ``instructor`` goes back where it was (a placeholder with
    its id is replaced, a dropped build solution returns after its skeleton); every other cell is the
    student's, so the learner's edits stay, and cells the learner added stay after the cell they followed.
    The ``raises-exception`` tags a student copy adds to checks cells are taken off again.
    """
    import nbformat

    if any("id" not in c for c in [*student.cells, *instructor.cells]):
        raise CourseError(
            "put_solutions_back matches cells by id: both notebooks need cell ids (nbformat >= 4.5; "
            "open and save them once in Jupyter)."
        )
    inst_ids = {c["id"] for c in instructor.cells}
    by_id = {c["id"]: c for c in student.cells}
    absent = [c["id"] for c in instructor.cells if not is_solution(c) and c["id"] not in by_id]
    if absent:
        raise CourseError(
            f"the student copy lacks {len(absent)} cell(s) of the instructor's notebook (first id "
            f"{absent[0]!r}): it was made from another version of it; make a fresh copy."
        )
    extra: dict = {}  # the learner's own cells, keyed by the instructor cell they follow
    prev = None
    for c in student.cells:
        if c["id"] in inst_ids:
            prev = c["id"]
        else:
            extra.setdefault(prev, []).append(copy.deepcopy(c))
    out = copy.deepcopy(student)
    cells = list(extra.get(None, []))
    for c in instructor.cells:
        if is_solution(c):
            new = copy.deepcopy(c)
            if new.cell_type == "code":
                new.outputs, new.execution_count = [], None
        else:
            new = copy.deepcopy(by_id[c["id"]])
            tags = new.metadata.get("tags") or []
            if RAISES_TAG in tags and RAISES_TAG not in (c.metadata.get("tags") or []):
                new.metadata["tags"] = [t for t in tags if t != RAISES_TAG]
        cells.append(new)
        cells += extra.get(c["id"], [])
    out.cells = cells
    nbformat.validate(out)
    return out


def _same_folder(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    if a == b:
        return True
    try:
        return b.exists() and a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def make_student_copies(
    src_dir: str | os.PathLike, out_dir: str | os.PathLike, pattern: str = "*.ipynb"
) -> list[StudentCopy]:
    """Write a student copy of every notebook of ``src_dir`` (matching ``pattern``) into ``out_dir``.

    Refuses to write into ``src_dir`` itself. Existing student copies of the same name in
    ``out_dir`` are replaced (atomically); nothing else there is touched.
    """
    import nbformat

    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise CourseError(f"no notebooks folder at {src}: pass the course's notebooks/ folder (--notebooks DIR).")
    if _same_folder(src, out):
        raise CourseError(
            f"the output folder {out} is the notebooks folder itself: student copies would "
            "overwrite the solutions. Choose another folder, e.g. --student student_notebooks."
        )
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
    lines = [f"{r.source.name:<{width}}  {r.solutions_removed:>2} solution cell(s) taken out" for r in report]
    total = sum(r.solutions_removed for r in report)
    lines.append(f"{len(report)} notebook(s), {total} solution cell(s) taken out -> {report[0].target.parent}")
    return "\n".join(lines)


# --- command line (wired into `llama2-lab course` by cli/) ---------------------------------------
def add_course_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--student",
        metavar="OUTDIR",
        required=True,
        help="write student copies (solutions replaced by placeholders) into this folder",
    )
    parser.add_argument(
        "--notebooks",
        metavar="DIR",
        default=None,
        help=f"the course notebooks to copy (default: {default_notebooks_dir()})",
    )
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
