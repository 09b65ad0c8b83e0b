"""Issue 25.4: file and genre-folder names with HTML and script, quotes, ``javascript:``, line breaks, names
near the 255-byte limit and bytes that are not UTF-8, through rebuild, report, status, predict and playlists.

One small rebuild (1 epoch, the CNN alone, no augmentation) of the demo set with hostile names is shared by the
module. Nothing crashes, every page escapes every name, and headless Chromium opening the pages runs none of
the names' script (a raw copy of the same page does run it: the probe can fail).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape

from genreflow.flows.cli import main
from genreflow.flows.rebuild import run_command
from genreflow.storage.outputs import tracks_path
from genreflow.storage.root import DataRoot
from genreflow.tasks.playlists import NAME_MAX_BYTES, PLAYLIST_SUFFIX, playlist_name, write_playlists
from genreflow.tasks.reporting.render import render_crossval_report, render_index
from genreflow.tasks.runs import genre_changes, list_runs
from genreflow.tasks.sources.folder import REASON_NOT_UTF8
from tests.reliability.conftest import small_config
from tests.tasks.reporting.browser import parse, run_chromium

pytestmark = pytest.mark.timeout(900)

# Each handler that runs marks <body>: a page that runs none has no data-pwned attribute.
GENRE_IMG = "<img src=x onerror=alert(1);document.body.dataset.pwned=1>"
GENRE_QUOTES = "\"quoted\" & 'apos' | javascript:alert(2)"
GENRE_NEWLINE = "Two\nlines <svg onload=alert(3);document.body.dataset.pwned=3>"
GENRE_LONG = "Long-" + "Ω" * 122 + "-end"  # 253 bytes of UTF-8 (a folder name may have 255)
GENRES = (GENRE_IMG, GENRE_QUOTES, GENRE_NEWLINE, GENRE_LONG)
FILE_SVG = "<svg onload=alert(4);document.body.dataset.pwned=4> javascript:alert(5)"
FILE_NEWLINE = "new\nline | pipe"
FILE_LONG = "x" * 247  # + ".mp3": 251 bytes
FILE_NOT_UTF8 = b"caf\xe9"  # Latin-1: not UTF-8
FILE_BROKEN = "<script>alert(6)<\\script> broken"  # not audio: quarantined, so always listed in the report
RAW_MARKUP = ("<img src=x", "<svg", "<script")  # none may reach a page unescaped
# Put into a copy of a page: a name that calls alert() marks <html>.
ALERT_HOOK = '<script>window.alert = m => document.documentElement.setAttribute("data-alerted", String(m));</script>'


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> dict:
    """The demo set with hostile genre folders and file names, rebuilt once."""
    base = tmp_path_factory.mktemp("hostile")
    collection = base / "collection"
    shutil.copytree(demo_dir, collection)
    genres = sorted(p.name for p in collection.iterdir())
    for old, new in zip(genres, GENRES, strict=False):
        os.rename(collection / old, collection / new)
    names = {FILE_SVG: genres[4], FILE_NEWLINE: genres[5], FILE_LONG: genres[6]}
    for stem, genre in names.items():
        os.rename(sorted((collection / genre).glob("*.mp3"))[0], collection / genre / f"{stem}.mp3")
    latin = sorted((collection / genres[7]).glob("*.mp3"))[0]
    os.rename(latin, os.fsencode(latin.parent) + b"/" + FILE_NOT_UTF8 + b".mp3")
    (collection / GENRE_IMG / f"{FILE_BROKEN}.mp3").write_bytes(b"not audio at all\n" * 100)
    root = base / "root"
    config = small_config(root, collection, shard_size=8, epochs=1, family="cnn", baseline=False,
                          time_stretch=[], pitch_shift=[], val_fraction=0.15, test_fraction=0.3)
    outcome = run_command("rebuild", config)
    return {"collection": collection, "root": root, "outcome": outcome, "base": base,
            "report": Path(outcome["report"]["dir"]), "genres": genres}


def test_rebuild_ingests_every_name_it_can_and_says_why_not_the_rest(hostile: dict) -> None:
    data_root = DataRoot(str(hostile["root"]))
    tracks = data_root.read_parquet(tracks_path(data_root))
    genres = hostile["genres"]
    assert set(GENRES) <= set(tracks["genre"])
    for stem, genre in ((FILE_SVG, genres[4]), (FILE_NEWLINE, genres[5]), (FILE_LONG, genres[6])):
        assert f"{genre}/{stem}" in set(tracks["track_id"]), stem
    quarantine = data_root.read_parquet(data_root.quarantine_path()).set_index("track_id")
    assert quarantine.loc[f"{genres[7]}/caf\\xe9", "reason"] == REASON_NOT_UTF8
    assert quarantine.loc[f"{GENRE_IMG}/{FILE_BROKEN}", "reason"]  # undecodable, with its reason
    assert hostile["outcome"]["metrics"]["n_tracks"] > 0


def _pages(hostile: dict) -> dict[str, str]:
    """report.html of the rebuild, reports/index.html with a per-genre change table, and a CV report listing
    hostile tracks as suspect labels."""
    root = DataRoot(str(hostile["root"]))
    runs = list_runs(root)
    # An earlier run of the family on the same test tracks, that had every genre: each one gets a change row.
    earlier = {**runs[0], "run": "run-earlier", "promoted": False, "per_genre": dict.fromkeys(GENRES, 0.5)}
    index = render_index([runs[0], earlier], genre_changes([runs[0], earlier])).decode("utf-8")
    assert "Changes per genre" in index and "run-earlier" in index
    issues = [{"rank": n + 1, "path": f"{genre}/{FILE_SVG}.mp3", "given_genre": genre, "suggested_genre": GENRE_IMG,
               "given_probability": 0.01, "suggested_probability": 0.9, "confident_learning": True,
               "track_id": f"{genre}/{FILE_NEWLINE}", "fold": 1, "clip_index": 0, "excerpt": None, "offset": None}
              for n, genre in enumerate(GENRES)]
    folds = [{"fold": 1, "tracks": {"train": 8, "val": 2, "test": 3}, "training": {"epochs_run": 1},
              "cnn": {"track_accuracy": 0.5, "macro_f1": 0.4}}]
    summary = {"folds": 1, "cnn": {"track_accuracy": {"mean": 0.5, "std": 0.0, "values": [0.5]}}}
    crossval = render_crossval_report(f"cv {GENRE_IMG}", summary, folds, {"genres": list(GENRES)},
                                      label_issues=issues, n_label_issues=len(issues))["crossval.html"]
    return {"report.html": (hostile["report"] / "report.html").read_text(encoding="utf-8"),
            "index.html": index, "crossval.html": crossval.decode("utf-8")}


def test_every_page_escapes_every_name(hostile: dict) -> None:
    for name, page in _pages(hostile).items():
        for raw in RAW_MARKUP:
            assert raw not in page, (name, raw)
        for genre in GENRES:
            assert escape(genre) in page, (name, genre)
    report = _pages(hostile)["report.html"]
    assert escape(f"{GENRE_IMG}/{FILE_BROKEN}") in report  # the quarantined file's row
    assert escape(f"{hostile['genres'][7]}/caf\\xe9") in report  # the name that is not UTF-8, as \xNN


def test_markdown_tables_keep_their_shape(hostile: dict) -> None:
    """A | or a line break in a name neither adds a cell nor ends a row of report.md's tables."""
    text = (hostile["report"] / "report.md").read_text(encoding="utf-8")
    confusion = text[text.index("| true \\ predicted |"):].split("\n\n")[0].splitlines()
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in confusion]
    assert len(confusion) == 2 + 8 and len(set(cells)) == 1, confusion  # header, rule, one row a genre
    assert "Two lines <svg" in text and "\"quoted\" & 'apos' \\| javascript:alert(2)" in text


def _dom(page: Path) -> str:
    return run_chromium(page, "--virtual-time-budget=5000", "--dump-dom")


def _marks(dom: str) -> dict[str, str]:
    """The marks a script that ran left on <html> (data-alerted) and <body> (data-pwned), from the DOM Chromium
    built; the page must have been parsed into both."""
    elements = parse(dom).elements
    tags = {tag: attrs for tag, attrs in elements if tag in ("html", "body")}
    assert set(tags) == {"html", "body"}, "Chromium built no page"
    return {name: value for attrs in tags.values() for name, value in attrs.items()
            if name in ("data-pwned", "data-alerted")}


def test_chromium_runs_no_script_from_any_name(hostile: dict) -> None:
    folder = hostile["base"] / "pages"
    folder.mkdir(exist_ok=True)
    for name, page in _pages(hostile).items():
        hooked = page.replace("<head>", f"<head>{ALERT_HOOK}", 1)
        assert hooked != page, name
        (folder / name).write_text(hooked, encoding="utf-8")
        assert _marks(_dom(folder / name)) == {}, name
    # The control: the same report with its text unescaped runs the names' handlers, which the probe sees.
    (folder / "raw.html").write_text(html.unescape((folder / "report.html").read_text(encoding="utf-8")),
                                     encoding="utf-8")
    assert set(_marks(_dom(folder / "raw.html"))) == {"data-pwned", "data-alerted"}


def test_status_answers_with_hostile_names(hostile: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(hostile["root"])
    assert main(["status", "--data-root", root]) == 0
    assert "tracks in" in capsys.readouterr().out
    assert main(["status", "--data-root", root, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ingested"] and status["quarantined"] == 2 and status["train"] == "done"


def test_predict_and_playlists_with_hostile_names(hostile: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out, playlists = hostile["base"] / "predictions.parquet", hostile["base"] / "playlists"
    code = main(["predict", str(hostile["collection"]), "--data-root", str(hostile["root"]), "--out", str(out),
                 "--playlists", str(playlists)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    table = pd.read_parquet(out)
    paths = set(table["path"])
    collection = str(hostile["collection"])
    assert len(table) == 25  # 24 demo tracks and the broken file, each one row
    assert f"{collection}/{GENRE_NEWLINE}/" in "".join(paths) and any(p.endswith("caf\\xe9.mp3") for p in paths)
    broken = table.set_index("path").loc[f"{collection}/{GENRE_IMG}/{FILE_BROKEN}.mp3"]
    assert broken["error"]  # a failure row with its reason, not a crash
    assert "line break" in printed  # the file whose name holds one is in no playlist, and the summary says so
    listed = 0
    for playlist in playlists.glob(f"*{PLAYLIST_SUFFIX}"):
        assert len(playlist.name.encode("utf-8")) <= NAME_MAX_BYTES
        lines = playlist.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "#EXTM3U"
        for line in lines[1:]:
            if not line.startswith("#"):
                assert (playlists / line).is_file(), line  # every entry line is one whole, existing path
                listed += 1
    # Not the broken file, the 4 whose path holds a line break (FILE_NEWLINE, and the 3 in GENRE_NEWLINE's
    # folder), or the one whose name is not UTF-8.
    assert listed == 25 - 1 - 4 - 1


def test_a_genre_named_near_the_limit_gets_a_playlist(tmp_path: Path) -> None:
    audio = tmp_path / "a.mp3"
    audio.write_bytes(b"x")
    names = {playlist_name(GENRE_LONG), playlist_name(GENRE_LONG + "2"), playlist_name(GENRE_NEWLINE)}
    assert len(names) == 3 and all(len(n.encode("utf-8")) <= NAME_MAX_BYTES for n in names)
    table = pd.DataFrame({"path": [str(audio)] * 2, "duration_s": [10.0] * 2, "error": [""] * 2,
                          "genre_1": [GENRE_LONG, GENRE_NEWLINE]})
    report = write_playlists(table, tmp_path / "lists")
    assert sorted(report.written) == sorted([playlist_name(GENRE_LONG), playlist_name(GENRE_NEWLINE)])
    assert all((tmp_path / "lists" / name).is_file() for name in report.written)
