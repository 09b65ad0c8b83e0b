"""A library as libraries are: unreadable files, symlink loops, the same files through other links, names
that are not UTF-8, a file that vanishes mid-run. The library flow on 2 Dask workers gives every path one
row or one line with a reason, completes, and a rerun does not retry a failure unless the file changed or
``--retry-failed`` asks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.predict_flow import run_library_predict
from genreflow.flows.predict_options import LibraryOptions
from genreflow.storage.files import display_path
from genreflow.tasks import library as library_module
from tests.model.test_export import save_model

pytestmark = pytest.mark.timeout(1200)

ROOT = os.geteuid() == 0  # root reads a file of mode 000: those cases need another user
LINES = {"up", "Alias", "best.mp3", "Private"}  # paths that are no file of their own: a line, not a row


def _leaf(path: str) -> str:
    return os.path.basename(path)


@pytest.fixture
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "run-bad", "genreflow")


def make_library(folder: Path, demo: list[Path]) -> dict[str, str]:
    """The library, and the reason each path that is not a good file is expected to give ("" for good ones)."""
    rock = folder / "Rock"
    rock.mkdir(parents=True)
    expected: dict[str, str] = {}
    for path in demo[:3]:
        shutil.copyfile(path, rock / path.name)
        expected[str(rock / path.name)] = ""
    odd = os.fsencode(str(folder)) + b"/Caf\xe9 \xff.mp3"  # Latin-1 and a byte no encoding maps
    with open(odd, "wb") as handle:
        handle.write(demo[3].read_bytes())
    expected[os.fsdecode(odd)] = ""
    os.mkfifo(folder / "pipe.mp3")  # opening it would block the worker for ever
    expected[str(folder / "pipe.mp3")] = "not a regular file (a FIFO)"
    os.symlink(folder / "nowhere.mp3", folder / "dangling.mp3")
    expected[str(folder / "dangling.mp3")] = "no such file"
    os.symlink(folder / "loop-b.mp3", folder / "loop-a.mp3")
    os.symlink(folder / "loop-a.mp3", folder / "loop-b.mp3")
    expected[str(folder / "loop-a.mp3")] = expected[str(folder / "loop-b.mp3")] = \
        "cannot open: too many levels of symbolic links"
    os.symlink("..", rock / "up")  # a folder link back up the tree
    expected[str(rock / "up")] = f"a symlink loop back to {folder}"
    os.symlink("Rock", folder / "Alias")  # the same folder twice ("Alias" sorts before "Rock")
    expected[str(folder / "Alias")] = f"the same folder as {rock}"
    os.symlink(rock / demo[0].name, folder / "best.mp3")  # the same file twice
    expected[str(folder / "best.mp3")] = f"the same file as {rock / demo[0].name}"
    shutil.copyfile(demo[4], folder / "vanish.mp3")
    expected[str(folder / "vanish.mp3")] = "no such file"
    if not ROOT:
        shutil.copyfile(demo[5], folder / "locked.mp3")
        os.chmod(folder / "locked.mp3", 0)
        expected[str(folder / "locked.mp3")] = "cannot open: permission denied"
        (folder / "Private").mkdir()
        shutil.copyfile(demo[6], folder / "Private" / "hidden.mp3")
        os.chmod(folder / "Private", 0)
        expected[str(folder / "Private")] = "cannot list the folder: permission denied"
    return expected


def options(library: Path, model_dir: Path, out: Path, **extra: object) -> LibraryOptions:
    return LibraryOptions(inputs=[str(library)], model_dir=str(model_dir), out=str(out), shard_size=3, workers=2,
                          retries=0, local_max=0, **extra)


def test_every_path_of_a_bad_library_gets_one_row_or_one_reason(
        demo_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genreflow.flows.predict_flow as predict_flow

    library = tmp_path / "library"
    expected = make_library(library, sorted(demo_dir.rglob("*.mp3")))
    listed = library_module.list_library

    def vanishing(inputs: list[str]) -> library_module.Listing:
        listing = listed(inputs)
        os.unlink(library / "vanish.mp3")  # listed, then gone before a worker opens it
        return listing

    monkeypatch.setattr(predict_flow, "list_library", vanishing)
    out = tmp_path / "predictions.parquet"
    playlists = tmp_path / "playlists"
    first = run_library_predict(options(library, model_dir, out, playlists=str(playlists)))
    monkeypatch.setattr(predict_flow, "list_library", listed)

    table = pd.read_parquet(out)
    rows = dict(zip(table["path"], table["error"], strict=True))
    lines = dict(first.not_listed)
    odd = os.fsdecode(os.fsencode(str(library)) + b"/Caf\xe9 \xff.mp3")
    # every path once: a file a row (error "" or its reason), a path not predicted a line with its reason
    assert table["path"].is_unique and len(rows) == sum(p not in LINES for p in map(_leaf, expected))
    assert {p: rows[display_path(p)] for p in expected if _leaf(p) not in LINES} == \
        {p: r for p, r in expected.items() if _leaf(p) not in LINES}
    assert {p: lines[p] for p in expected if _leaf(p) in LINES} == \
        {p: r for p, r in expected.items() if _leaf(p) in LINES}
    assert set(lines) == {p for p in expected if _leaf(p) in LINES} | {display_path(odd)}
    # predicted, and in no playlist: an M3U8 is UTF-8
    assert lines[display_path(odd)] == "its name is not UTF-8, which an M3U8 playlist cannot hold"
    assert display_path(odd).endswith("Caf\\xe9 \\xff.mp3") and rows[display_path(odd)] == ""
    good = [p for p, r in expected.items() if r == ""]
    assert first.files == len(rows) and first.predicted == len(good) and first.computed == len(rows)
    printed = "\n".join(first.lines())
    assert f"not predicted: {library / 'Alias'}: the same folder as {library / 'Rock'}" in printed
    assert f"failed: {library / 'pipe.mp3'}: not a regular file (a FIFO)" in printed

    # a rerun: the vanished file is gone from the library, the failures are not tried again
    second = run_library_predict(options(library, model_dir, out))
    assert second.changes is not None and (second.changes.removed, second.changes.modified) == (1, 0)
    assert second.computed == 0 and len(pd.read_parquet(out)) == len(rows) - 1

    # a failure whose file changes is tried again without asking; --retry-failed tries every failure
    os.unlink(library / "pipe.mp3")
    shutil.copyfile(next(demo_dir.rglob("*.mp3")), library / "pipe.mp3")  # the FIFO is a song now
    third = run_library_predict(options(library, model_dir, out))
    assert third.computed == 1 and third.changes is not None and third.changes.modified == 1
    assert pd.read_parquet(out).set_index("path").loc[str(library / "pipe.mp3"), "error"] == ""
    failures = [p for p, r in expected.items() if r and _leaf(p) not in LINES | {"vanish.mp3", "pipe.mp3"}]
    fourth = run_library_predict(options(library, model_dir, out, retry_failed=True))
    assert fourth.computed == len(failures) and len(fourth.failures) == len(failures)
    if not ROOT:
        os.chmod(library / "Private", 0o755)
