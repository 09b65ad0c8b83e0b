"""report.html in a real browser: one <audio> per Mistakes row, each playing an excerpt that exists and decodes,
and the confusion matrix's cells linking to those rows.

A slice of the report stage on real mp3 tracks (the demo synthesiser's): the
mistakes of made-up predictions, their excerpts cut and encoded, the page
rendered, then opened in headless Chromium.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genreflow.model.metrics import evaluate_predictions, prob_columns
from genreflow.model.params import AudioConfig
from genreflow.tasks.excerpts import add_excerpts
from genreflow.tasks.mistakes import confident_mistakes
from genreflow.tasks.reporting.render import dataset_summary, render_report
from tests.tasks.reporting.browser import decoded_durations, dump_dom, parse, run_chromium

AUDIO = AudioConfig(clip_seconds=10.0, clips_per_track=None)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """reports/<run>/ of a model that takes every track of the first genres for the next genre."""
    from genreflow.tasks.sources.demo_synth import DEMO_GENRES, generate_demo_set

    folder = tmp_path_factory.mktemp("report")
    paths = generate_demo_set(folder / "demo", tracks_per_genre=1, seed=3, seconds=20.5)  # 2 clips a track
    genres = sorted(DEMO_GENRES)
    rng = np.random.default_rng(0)
    rows = []
    for path in paths:
        genre = path.parent.name
        wrong = genres.index(genre) < 4  # the first four genres are mistaken for the next one
        for clip in range(2):
            p = rng.dirichlet(np.ones(len(genres)))
            p[(genres.index(genre) + wrong) % len(genres)] += 3.0
            rows.append({"track_id": f"{genre}/{path.stem}", "clip_index": clip, "genre": genre,
                         **dict(zip(prob_columns(genres), p / p.sum(), strict=True))})
    clips = pd.DataFrame(rows)
    predictions, metrics = evaluate_predictions(clips, clips[prob_columns(genres)].to_numpy(), genres)
    paths_by_id = {f"{p.parent.name}/{p.stem}": str(p) for p in paths}
    out = folder / "run"
    out.mkdir()

    def write(name: str, data: bytes) -> None:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)

    mistakes = add_excerpts(confident_mistakes(predictions, genres, paths_by_id), AUDIO, write)
    tracks = pd.DataFrame({"track_id": list(paths_by_id), "genre": [t.split("/")[0] for t in paths_by_id],
                           "split": "test"})
    summary = dataset_summary(tracks, pd.DataFrame(), pd.DataFrame(columns=["split", "augmentation", "clips"]), [])
    history = pd.DataFrame({"epoch": [1, 2], "accuracy": [0.5, 0.6], "loss": [1.0, 0.9]})
    for name, data in render_report("run-browser", metrics, history, summary, {"audio": AUDIO.model_dump()},
                                    mistakes=mistakes).items():
        write(name, data)
    return out, mistakes


def test_the_mistakes_are_the_first_four_genres(report: tuple[Path, list[dict]]) -> None:
    _, mistakes = report
    assert len(mistakes) == 4 and all(row["excerpt"] for row in mistakes)


def test_one_player_per_mistake_row_each_excerpt_exists_and_decodes(report: tuple[Path, list[dict]]) -> None:
    folder, mistakes = report
    dom = parse(dump_dom(folder / "report.html"))
    sources = dom.audio_sources()
    assert dom.rows("mistake") == len(sources) == len(mistakes)
    for source in sources:
        data, rate = sf.read(folder / source)
        assert rate == AUDIO.sample_rate and abs(len(data) / rate - AUDIO.clip_seconds) < 0.1
    # And Chromium itself decodes every one of them, as 10 s of audio.
    durations = decoded_durations(folder / "report.html")
    assert len(durations) == len(mistakes) and all(abs(float(d) - 10.0) < 0.1 for d in durations), durations


def test_confusion_cells_link_to_their_rows(report: tuple[Path, list[dict]]) -> None:
    folder, mistakes = report
    dom = parse(dump_dom(folder / "report.html"))
    links = [attrs["href"] for tag, attrs in dom.elements if tag == "a"]
    ids = {attrs["id"] for tag, attrs in dom.elements if tag == "tr" and "id" in attrs}
    assert len(links) == len(mistakes) and {link.removeprefix("#") for link in links} == ids


def test_screenshot(report: tuple[Path, list[dict]]) -> None:
    """The page draws (the check a person does by eye, done by the documented command)."""
    folder, _ = report
    shot = folder / "report.png"
    run_chromium(folder / "report.html", f"--screenshot={shot}", "--window-size=1280,2400")
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (2400, 1280) and pixels.std() > 10
