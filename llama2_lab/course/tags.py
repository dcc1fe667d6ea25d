"""The cell tags of the course notebooks and what they mark: ``"solution"`` (the learner's work, taken out of a
student copy), ``"skeleton"`` (a build's signature and TODO), ``"checks"`` (the checks after an exercise),
``"exercise-placeholder"`` and ``"raises-exception"`` (added to a student copy); which cells carry them, the
runs of consecutive solution cells (``solution_blocks``) and what is wrong with a notebook's exercises
(``exercise_problems``)."""

from __future__ import annotations

SOLUTION_TAG = "solution"
SKELETON_TAG = "skeleton"  # optional: a code cell raising NotImplementedError right before a solution is one too
CHECKS_TAG = "checks"
PLACEHOLDER_TAG = "exercise-placeholder"
RAISES_TAG = "raises-exception"  # nbval, JupyterLab's Run All and Jupyter Book let a cell with this tag raise


def is_solution(cell) -> bool:
    return SOLUTION_TAG in (cell.get("metadata", {}).get("tags") or [])


def count_solutions(nb) -> int:
    """Number of cells tagged ``"solution"`` in a notebook node."""
    return sum(is_solution(c) for c in nb.cells)


def is_skeleton(cell) -> bool:
    """A build's skeleton: a code cell tagged ``"skeleton"``, or one raising NotImplementedError, not a solution."""
    if cell.cell_type != "code" or is_solution(cell):
        return False
    return SKELETON_TAG in (cell.get("metadata", {}).get("tags") or []) or "NotImplementedError" in cell.source


def solution_blocks(nb) -> list[tuple[int, int, bool]]:
    """(first, last + 1, a skeleton right before it) for every run of consecutive solution cells."""
    out, i = [], 0
    while i < len(nb.cells):
        if is_solution(nb.cells[i]):
            j = i
            while j < len(nb.cells) and is_solution(nb.cells[j]):
                j += 1
            out.append((i, j, i > 0 and is_skeleton(nb.cells[i - 1])))
            i = j
        else:
            i += 1
    return out


def exercise_problems(nb) -> list[str]:
    """What is wrong with the exercises of a notebook: a solution with no prompt before it, etc."""
    problems = []
    for first, last, skeleton in solution_blocks(nb):
        j = first - 1 - int(skeleton)  # the prompt comes before the block (and before its skeleton)
        if j < 0 or nb.cells[j].cell_type != "markdown":
            problems.append(
                f"cell {first}: a solution cell with no markdown exercise prompt before it (or before its skeleton)"
            )
        for i in range(first, last):
            if not nb.cells[i].source.strip():
                problems.append(f"cell {i}: an empty solution cell")
    return problems
