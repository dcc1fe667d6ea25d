"""Student copies of the notebooks: solutions out, prompts and checks kept, the source never touched."""

import argparse
import copy
import json
from pathlib import Path

import nbformat
import pytest

from llama2_lab.course import student as course
from llama2_lab.course.student import CourseError, make_student_copies

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _nb(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = cells
    return nb


def _code(src, tags=(), outputs=None):
    c = nbformat.v4.new_code_cell(src)
    if tags:
        c.metadata["tags"] = list(tags)
    if outputs is not None:
        c.outputs = outputs
        c.execution_count = 3
    return c


def _md(src, tags=()):
    c = nbformat.v4.new_markdown_cell(src)
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def _write(folder: Path, name: str, nb) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


@pytest.fixture
def course_dir(tmp_path):
    src = tmp_path / "notebooks"
    out = nbformat.v4.new_output("stream", name="stdout", text="SECRET 42\n")
    _write(
        src,
        "00_a.ipynb",
        _nb(
            [
                _md("# A\nGoals"),
                _code("x = 1"),
                _md("**Exercise 1.** Compute the answer."),
                _code("answer = 6 * 7\nprint('SECRET', answer)", tags=["solution"], outputs=[out]),
                _code("assert answer == 42  # checks", tags=["checks"]),
                _md("**Exercise 2.** Explain in words."),
                _md("Because 6 times 7 is 42.", tags=["solution"]),
                _md("**Exercise 3.** Two cells of solution."),
                _code("def f(n):\n    return n + 1", tags=["solution", "keep-me"]),
                _code("g = f(1)", tags=["solution"]),
                _code("assert g == 2", tags=["checks"]),
            ]
        ),
    )
    _write(src, "01_b.ipynb", _nb([_md("# B"), _code("print('no exercises here')", outputs=[out])]))
    return src


def test_solutions_replaced_and_checks_kept(course_dir, tmp_path):
    report = make_student_copies(course_dir, tmp_path / "student")
    assert [r.source.name for r in report] == ["00_a.ipynb", "01_b.ipynb"]
    assert [r.solutions_removed for r in report] == [4, 0]

    nb = nbformat.read(tmp_path / "student" / "00_a.ipynb", as_version=4)
    nbformat.validate(nb)
    text = json.dumps(nb)
    assert "6 * 7" not in text and "SECRET" not in text and "6 times 7" not in text and "return n + 1" not in text
    assert course.count_solutions(nb) == 0
    sources = [c.source for c in nb.cells]
    # prompts and checks are kept, in place
    assert sources[2] == "**Exercise 1.** Compute the answer."
    assert sources[4] == "assert answer == 42  # checks"
    # a checks cell right after an unsolved exercise may raise: Run All and nbval go on past it
    assert nb.cells[4].metadata["tags"] == ["checks", "raises-exception"]
    assert sources[10] == "assert g == 2"
    # code solutions became placeholders that raise, markdown ones an answer box
    for i in (3, 8, 9):
        assert nb.cells[i].cell_type == "code"
        assert "# YOUR CODE HERE" in sources[i] and "raise NotImplementedError" in sources[i]
        assert {"exercise-placeholder", "raises-exception"} <= set(nb.cells[i].metadata["tags"])
        assert nb.cells[i].outputs == [] and nb.cells[i].execution_count is None
    assert nb.cells[6].cell_type == "markdown" and sources[6] == course.MARKDOWN_PLACEHOLDER
    assert "keep-me" in nb.cells[8].metadata["tags"]  # other tags survive
    assert len(nb.cells) == 11


def test_placeholder_raises_not_implemented():
    with pytest.raises(NotImplementedError, match="Exercise"):
        exec(compile(course.CODE_PLACEHOLDER, "<placeholder>", "exec"), {})


def test_all_outputs_cleared(course_dir, tmp_path):
    make_student_copies(course_dir, tmp_path / "student")
    nb = nbformat.read(tmp_path / "student" / "01_b.ipynb", as_version=4)
    assert nb.cells[1].source == "print('no exercises here')"
    assert nb.cells[1].outputs == [] and nb.cells[1].execution_count is None


def test_source_untouched(course_dir, tmp_path):
    before = {p.name: p.read_bytes() for p in course_dir.iterdir()}
    make_student_copies(course_dir, tmp_path / "student")
    assert {p.name: p.read_bytes() for p in course_dir.iterdir()} == before


def test_refuses_to_overwrite_the_source(course_dir):
    before = {p.name: p.read_bytes() for p in course_dir.iterdir()}
    with pytest.raises(CourseError, match="notebooks folder itself"):
        make_student_copies(course_dir, course_dir)
    with pytest.raises(CourseError, match="notebooks folder itself"):
        make_student_copies(course_dir, course_dir / ".." / course_dir.name)  # same folder, other spelling
    assert {p.name: p.read_bytes() for p in course_dir.iterdir()} == before


def test_refuses_symlink_to_source(course_dir, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(course_dir, target_is_directory=True)
    with pytest.raises(CourseError, match="itself"):
        make_student_copies(course_dir, link)


def test_bad_inputs_say_what_to_do(tmp_path, course_dir):
    with pytest.raises(CourseError, match="no notebooks folder"):
        make_student_copies(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseError, match="no notebooks matching"):
        make_student_copies(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CourseError, match="not a folder"):
        make_student_copies(course_dir, tmp_path / "afile")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.ipynb").write_text("{not json")
    with pytest.raises(CourseError, match="not a readable notebook"):
        make_student_copies(broken, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()  # nothing written when a notebook is broken


def test_exercise_problems():
    good = _nb([_md("**Exercise**"), _code("a = 1", tags=["solution"]), _code("b = 2", tags=["solution"])])
    assert course.exercise_problems(good) == []
    bad = _nb([_code("a = 1", tags=["solution"]), _code("x"), _code("", tags=["solution"])])
    problems = course.exercise_problems(bad)
    assert any("cell 0" in p and "prompt" in p for p in problems)
    assert any("cell 2" in p and "empty" in p for p in problems)


def test_cli_entry_points(course_dir, tmp_path, capsys):
    parser = course.add_course_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--student", str(tmp_path / "s"), "--notebooks", str(course_dir)])
    assert course.run_from_args(args) == 0
    assert "4 solution cell(s) taken out" in capsys.readouterr().out
    assert (tmp_path / "s" / "00_a.ipynb").is_file()
    args = parser.parse_args(["--student", str(course_dir), "--notebooks", str(course_dir)])
    assert course.run_from_args(args) == 2
    assert "overwrite the solutions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --student is required


def test_student_copy_is_idempotent(course_dir, tmp_path):
    make_student_copies(course_dir, tmp_path / "s1")
    make_student_copies(tmp_path / "s1", tmp_path / "s2")  # a copy of a copy changes nothing more
    a = nbformat.read(tmp_path / "s1" / "00_a.ipynb", as_version=4)
    b = nbformat.read(tmp_path / "s2" / "00_a.ipynb", as_version=4)
    assert [c.source for c in a.cells] == [c.source for c in b.cells]


# --- the real course ------------------------------------------------------------------------------
def _real_notebooks():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        pytest.skip(f"no notebooks in {NOTEBOOKS}")
    return paths


def test_real_notebooks_student_copies(tmp_path):
    paths = _real_notebooks()
    tagged = {p.name: course.count_solutions(nbformat.read(p, as_version=4)) for p in paths}
    report = make_student_copies(NOTEBOOKS, tmp_path / "student")
    assert {r.source.name: r.solutions_removed for r in report} == tagged
    for r in report:
        src = nbformat.read(r.source, as_version=4)
        nb = nbformat.read(r.target, as_version=4)
        assert course.count_solutions(nb) == 0
        student_text = "\n".join(c.source for c in nb.cells)
        by_id = {c["id"]: c for c in nb.cells}
        for i, a in enumerate(src.cells):
            if course.is_solution(a):
                if a["id"] in by_id:  # an exercise: a placeholder in its place
                    b = by_id[a["id"]]
                    assert "exercise-placeholder" in b.metadata["tags"]
                    assert b.source in (course.CODE_PLACEHOLDER, course.MARKDOWN_PLACEHOLDER)
                else:  # a build: dropped, its skeleton kept
                    j = i - 1
                    while course.is_solution(src.cells[j]):
                        j -= 1
                    assert course.is_skeleton(src.cells[j]), (r.source.name, i)
                    assert src.cells[j]["id"] in by_id
                if len(a.source.strip()) > 40:  # a long solution appears nowhere in the student copy
                    assert a.source.strip() not in student_text, (r.source.name, a.source[:60])
            else:
                b = by_id[a["id"]]
                assert a.source == b.source  # prompts, derivations, skeletons and checks cells unchanged
                assert b.get("outputs", []) == []
        # and the solutions go back in: the instructor's notebook, cell for cell
        back = course.put_solutions_back(nb, src)
        assert [(c["id"], c.source) for c in back.cells] == [(c["id"], c.source) for c in src.cells]
        assert [c.metadata.get("tags", []) for c in back.cells] == [c.metadata.get("tags", []) for c in src.cells]
    # the notebooks this module was written with have exercises
    for name in (
        "00_welcome.ipynb",
        "01_tokenizer_chat.ipynb",
        "06_assemble.ipynb",
        "07_pretraining.ipynb",
        "13_by_the_numbers.ipynb",
    ):
        if name in tagged:
            assert tagged[name] >= 1, f"{name} has no cell tagged 'solution'"


def test_builds_dropped_and_put_back(tmp_path):
    skeleton = _code("def my_f(x):\n    # x: (B, T)\n    raise NotImplementedError('TODO: x + 1')")
    solution = _code(
        "def my_f(x):\n    return x + 1",
        tags=["solution"],
        outputs=[nbformat.v4.new_output("stream", name="stdout", text="SECRET\n")],
    )
    check = _code("result = check_f(my_f)\nf = use(result, my_f, pkg_f, 'f')")
    nb = _nb(
        [
            _md("# T"),
            _md("**Build** f: x + 1."),
            skeleton,
            solution,
            check,
            _md("**Exercise** say it."),
            _md("It is x + 1.", tags=["solution"]),
        ]
    )
    nbformat.validator.normalize(nb)
    student, n = course.student_notebook(nb)
    assert n == 2
    assert [c.source for c in student.cells] == [nb.cells[i].source for i in (0, 1, 2, 4, 5)] + [
        course.MARKDOWN_PLACEHOLDER
    ]
    assert "SECRET" not in json.dumps(student)
    assert course.exercise_problems(nb) == []
    assert course.checked_builds(nb) == {"my_f": 4}
    assert course.untagged_builds(nb) == []
    # the learner edits the skeleton and adds a cell of their own; the solutions come back around them
    student.cells[2].source = "def my_f(x):\n    return x + 2  # mine"
    mine = _code("print('my own cell')")
    student.cells.insert(3, mine)
    back = course.put_solutions_back(student, nb)
    assert [c.source for c in back.cells] == [
        nb.cells[0].source,
        nb.cells[1].source,
        student.cells[2].source,
        mine.source,
        solution.source,
        check.source,
        nb.cells[5].source,
        nb.cells[6].source,
    ]
    assert back.cells[4].outputs == []  # solutions come back without their outputs


def test_untagged_builds_named():
    ready = _nb([_md("# T"), _code("def my_f(x):\n    return x + 1"), _code("assert check_f(my_f).passed")])
    assert any("my_f" in p and "ready-made" in p for p in course.untagged_builds(ready))
    demo = _nb([_code("def wrong(x):\n    return x"), _code("r = check_f(wrong)\nassert not r.passed")])
    data = _nb(
        [
            _code("tok = make()"),
            _code("def my_f(t):\n    raise NotImplementedError"),
            _code("def my_f(t):\n    return t", tags=["solution"]),
            _code("use(check_f(my_f, tok), my_f, g, 'f')"),
        ]
    )
    assert course.checked_builds(data) == {"my_f": 3}  # the tokenizer passed along is no build
    assert course.checked_builds(demo) == {} and course.untagged_builds(demo) == []
    no_solution = _nb([_code("def my_f(x):\n    raise NotImplementedError"), _code("use(check_f(my_f), my_f, g, 'f')")])
    assert any("no cell tagged 'solution'" in p for p in course.untagged_builds(no_solution))


def test_put_back_refuses_another_version():
    a = _nb([_md("# A"), _code("x = 1")])
    nbformat.validator.normalize(a)
    b = copy.deepcopy(a)
    b.cells = b.cells[:1]
    with pytest.raises(CourseError, match="another version"):
        course.put_solutions_back(b, a)


def test_real_notebooks_exercises_have_prompts():
    for p in _real_notebooks():
        nb = nbformat.read(p, as_version=4)
        assert course.exercise_problems(nb) == [], p.name


def test_real_student_copies_leak_no_answers(tmp_path):
    """Answers hidden in markdown (<details>) or computed by an untagged cell after a prompt are leaks."""
    make_student_copies(NOTEBOOKS, tmp_path / "student")
    for path in sorted((tmp_path / "student").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, c in enumerate(nb.cells):
            assert "<details" not in c.source, f"{path.name} cell {i}: a <details> answer; tag it 'solution'"
            if c.cell_type == "markdown" and c.source.lstrip().startswith("**Exercise"):
                # a cell that shows an exercise's answer is a solution (gone from the copy), not an untagged cell
                j = i + 1
                while j < len(nb.cells) and nb.cells[j].cell_type == "code":
                    tags = set(nb.cells[j].metadata.get("tags") or [])
                    src = nb.cells[j].source
                    shows = any(f in src for f in ("print(", "display(", "show(", "plt.", "Markdown("))
                    ok = tags & {"exercise-placeholder", "checks"} or course.is_skeleton(nb.cells[j]) or not shows
                    assert ok, f"{path.name} cell {j}: an untagged cell shows the answer to the exercise at cell {i}"
                    j += 1
