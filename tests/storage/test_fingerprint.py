"""Code versions: what the code does is in every fingerprint; comments, docstrings and layout are not."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genreflow.storage.fingerprint import code_version

ORIGINAL = '''
"""Module docstring."""
SCALE = 2


def double(x):
    """Twice x."""
    return x * SCALE


def other(x):
    return x + 1
'''


@pytest.fixture()
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module ``gf_code_probe`` with the given source; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        (tmp_path / "gf_code_probe.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return "gf_code_probe"

    yield write
    sys.modules.pop("gf_code_probe", None)


def test_comments_docstrings_and_layout_do_not_change_the_version(module: Callable[[str], str]) -> None:
    name = module(ORIGINAL)
    before = code_version(name), code_version(f"{name}:double")
    module(ORIGINAL.replace('"""Twice x."""', '"""Two times x, said otherwise."""')
           .replace('"""Module docstring."""', "# a comment") .replace("x * SCALE", "x  *  SCALE  # scaled"))
    assert (code_version(name), code_version(f"{name}:double")) == before


def test_a_change_in_what_the_code_does_changes_its_version_and_only_its_own(module: Callable[[str], str]) -> None:
    name = module(ORIGINAL)
    whole, double, other = code_version(name), code_version(f"{name}:double"), code_version(f"{name}:other")
    module(ORIGINAL.replace("return x + 1", "return x + 2"))
    assert code_version(name) != whole and code_version(f"{name}:other") != other
    assert code_version(f"{name}:double") == double  # a function's version is its own source
    module(ORIGINAL.replace("SCALE = 2", "SCALE = 3"))
    assert code_version(name) != whole


def test_the_module_is_read_not_imported(module: Callable[[str], str]) -> None:
    name = module(ORIGINAL + "\nraise RuntimeError('imported')\n")
    assert code_version(name)
    assert name not in sys.modules


def test_unknown_modules_and_names_are_errors(module: Callable[[str], str]) -> None:
    name = module(ORIGINAL)
    with pytest.raises(ValueError, match="no top-level 'missing'"):
        code_version(f"{name}:missing")
    with pytest.raises(ValueError, match="no Python source"):
        code_version("gf_no_such_module_anywhere")


def write_module(folder: Path, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return name


def test_moving_a_definition_between_listed_modules_keeps_the_version_and_a_body_change_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20: a version hashes what the code does, not where it lives. A stage lists modules a and b; moving
    ``double`` from a to b (with the import a now needs) leaves the stage's version as it was, while changing
    ``double``'s body, wherever it lives, changes it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    stage = ("gf_probe_a", "gf_probe_b")
    write_module(tmp_path, "gf_probe_a", ORIGINAL)
    write_module(tmp_path, "gf_probe_b", "def helper(y):\n    return -y\n")
    before = code_version(*stage)
    a_without_double = ORIGINAL.replace('def double(x):\n    """Twice x."""\n    return x * SCALE\n', "")
    assert "def double" not in a_without_double
    write_module(tmp_path, "gf_probe_a", "from gf_probe_b import double\n" + a_without_double)
    write_module(tmp_path, "gf_probe_b", "from gf_probe_a import SCALE\n\n\ndef helper(y):\n    return -y\n\n\n"
                 "def double(x):\n    from genreflow.storage import fingerprint  # an import of genreflow's own code\n"
                 "    return x * SCALE\n")
    assert code_version(*stage) == before
    write_module(tmp_path, "gf_probe_b",
                 "def helper(y):\n    return -y\n\n\ndef double(x):\n    return x * SCALE + 1\n")
    assert code_version(*stage) != before
    for name in stage:
        sys.modules.pop(name, None)


def test_an_import_of_another_library_is_part_of_the_code(module: Callable[[str], str]) -> None:
    """Only genreflow's own and the listed modules' imports are left out: swapping numpy's fft for scipy's is a
    change in what the code does."""
    name = module("from numpy.fft import rfft\n\ndef f(x):\n    return rfft(x)\n")
    before = code_version(name)
    module("from scipy.fft import rfft\n\ndef f(x):\n    return rfft(x)\n")
    assert code_version(name) != before
