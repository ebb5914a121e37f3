"""The exercise checks of bimsnn.course against the worked solutions in examples/solutions/.

For every notebook NN: each ``exercise_N()`` of ``examples/solutions/NN_*_solutions.py``
passes its check (``bimsnn.course.EXERCISES["NN"][N - 1]``), the file's typical mistake
(``MISTAKES[N]``) fails it, the placeholder ``None`` reads as "not answered yet", and an
answer that raises is reported as wrong instead of propagating.
"""

import importlib.util
from pathlib import Path

import pytest

from bimsnn import course

SOLUTIONS = Path(__file__).resolve().parent.parent / "examples" / "solutions"
CASES = [(nb, n) for nb, checks in sorted(course.EXERCISES.items())
         for n in range(1, len(checks) + 1)]


def load_solutions(nb: str):
    """Import ``examples/solutions/<nb>_*_solutions.py`` as a fresh module."""
    (path,) = sorted(SOLUTIONS.glob(f"{nb}_*_solutions.py"))
    spec = importlib.util.spec_from_file_location(f"solutions_{nb}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_notebook_has_two_to_four_exercises_and_a_solutions_file():
    assert sorted(course.EXERCISES) == [f"{i:02d}" for i in range(1, 12)]
    for nb, checks in course.EXERCISES.items():
        assert 2 <= len(checks) <= 4, nb
        assert all(c.__doc__ and c.__name__ in course.__all__ for c in checks)
        assert len(list(SOLUTIONS.glob(f"{nb}_*_solutions.py"))) == 1, nb


@pytest.mark.parametrize("nb, n", CASES, ids=[f"{nb}-ex{n}" for nb, n in CASES])
def test_solution_passes_its_check(nb, n, capsys):
    mod = load_solutions(nb)
    assert course.EXERCISES[nb][n - 1](getattr(mod, f"exercise_{n}")()) is True
    assert "correct." in capsys.readouterr().out


@pytest.mark.parametrize("nb, n", CASES, ids=[f"{nb}-ex{n}" for nb, n in CASES])
def test_typical_mistake_fails_its_check(nb, n, capsys):
    mod = load_solutions(nb)
    assert course.EXERCISES[nb][n - 1](mod.MISTAKES[n]) is False
    assert "not quite" in capsys.readouterr().out


@pytest.mark.parametrize("nb, n", CASES, ids=[f"{nb}-ex{n}" for nb, n in CASES])
def test_unanswered_and_raising_answers_never_raise(nb, n, capsys):
    check = course.EXERCISES[nb][n - 1]
    assert check(None) is None
    assert check(...) is None
    assert "not answered yet" in capsys.readouterr().out

    def broken(*args):
        raise RuntimeError("student bug")

    assert check(broken) is False
    assert "raised RuntimeError: student bug" in capsys.readouterr().out
    assert check(42) is False                     # not a function
