"""What the tests assert about the course notebooks, read from their code without running it: the learner's
builds (functions and classes a notebook defines and hands to a ``check_*`` call, ``checked_builds``) and
those handed over ready-made instead of written in a cell tagged ``"solution"`` (``untagged_builds``)."""

from __future__ import annotations

import ast
import re

from .tags import is_solution

_CHECK_NAME = re.compile(r"^check_\w+$")


def _code(source: str) -> str:
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())


def _tree(cell):
    if cell.cell_type != "code":
        return None
    try:
        return ast.parse(_code(cell.source))
    except SyntaxError:
        return None


def _definitions(tree) -> dict:
    """Top-level names a cell defines (def, class, assignment) -> the defining node."""
    out = {}
    for node in tree.body if tree else []:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
    return out


def _call_name(node) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def checked_builds(nb) -> dict[str, int]:
    """The learner's builds: functions and classes the notebook defines and passes to a ``check_*`` call
    (positionally or by keyword) -> the cell of the first such call. A deliberately wrong demo whose check is asserted to fail
    (``assert not check_x(wrong).passed``; ``r = check_x(wrong)`` ... ``assert not r.passed`` or
    ``assert r.mistake == ...``) is not one."""
    trees = [_tree(c) for c in nb.cells]
    defined = {
        name
        for t in trees
        for name, node in _definitions(t).items()  # functions and classes: the
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }  # tokenizer is no build
    calls: list[tuple[ast.Call, int]] = []
    result_of: dict[str, list[ast.Call]] = {}  # r = check_x(...): r -> the calls
    failing: set[int] = set()  # id() of check calls asserted to fail
    failing_names: set[str] = set()

    def unwrap(expr):  # check_x(...).passed / r.passed -> check_x(...) / r
        return expr.value if isinstance(expr, ast.Attribute) and expr.attr == "passed" else expr

    for i, tree in enumerate(trees):
        for node in ast.walk(tree) if tree else []:
            if isinstance(node, ast.Call) and _CHECK_NAME.match(_call_name(node)):
                calls.append((node, i))
            elif (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and _CHECK_NAME.match(_call_name(node.value))
            ):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        result_of.setdefault(t.id, []).append(node.value)
            elif isinstance(node, ast.Assert):  # `assert r.mistake == "..."`: a demo of a diagnosed mistake
                failing_names |= {
                    n.value.id
                    for n in ast.walk(node.test)
                    if isinstance(n, ast.Attribute) and n.attr == "mistake" and isinstance(n.value, ast.Name)
                }
            if (
                isinstance(node, ast.Assert)
                and isinstance(node.test, ast.UnaryOp)
                and isinstance(node.test.op, ast.Not)
            ):
                inner = unwrap(node.test.operand)
                if isinstance(inner, ast.Call):
                    failing.add(id(inner))
                elif isinstance(inner, ast.Name):
                    failing_names.add(inner.id)
    for name in failing_names:
        failing |= {id(c) for c in result_of.get(name, [])}
    out: dict[str, int] = {}
    for call, i in calls:
        if id(call) in failing:
            continue
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            if isinstance(arg, ast.Name) and arg.id in defined:
                out.setdefault(arg.id, i)
    return out


def untagged_builds(nb) -> list[str]:
    """Checked builds handed over ready-made: defined outside a solution cell other than by a skeleton (a
    definition raising NotImplementedError), or never defined in a solution cell. [] when all is well."""
    problems = []
    for name, where in checked_builds(nb).items():
        in_solution, ready_made = False, []
        for i, c in enumerate(nb.cells):
            node = _definitions(_tree(c)).get(name)
            if node is None:
                continue
            if is_solution(c):
                in_solution = True
            elif "NotImplementedError" not in (ast.get_source_segment(_code(c.source), node) or ""):
                ready_made.append(i)
        if ready_made:
            problems.append(
                f"{name} (checked in cell {where}) is defined ready-made in cell(s) {ready_made}: make "
                "that a skeleton raising NotImplementedError and put the code in a cell tagged 'solution'"
            )
        elif not in_solution:
            problems.append(f"{name} (checked in cell {where}) is defined in no cell tagged 'solution'")
    return problems
