"""bench.head_study on synthetic clip features: every head separates separable tracks, and the cache round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genreflow.bench import head_study
from genreflow.model.track_head import HEAD_KINDS


def _data(per_genre: int = 10, clips: int = 2, dims: int = 6, seed: int = 0) -> dict:
    """Clips of tracks around one centre a genre, as load_or_embed returns them (two fake models)."""
    rng = np.random.default_rng(seed)
    genres = np.repeat(np.array(["a", "b", "c"]), per_genre)
    clip_track = np.repeat(np.arange(len(genres)), clips)
    centres = rng.normal(0, 4, (3, dims))
    track_x = centres[np.repeat(np.arange(3), per_genre)] + rng.normal(0, 1, (len(genres), dims))
    features = {f"{m}:max_pool": track_x[clip_track] + rng.normal(0, 0.3, (len(clip_track), dims))
                for m in head_study.MODELS}
    return {"tracks": [f"t{i}" for i in range(len(genres))], "genres": genres, "clip_track": clip_track,
            "features": features, "cpu_s_per_clip": {m: 0.1 for m in head_study.MODELS}}


def test_every_head_scores_separable_tracks_on_the_same_folds(capsys: pytest.CaptureFixture[str]) -> None:
    data = _data()
    sets = {"both": ("MSD_musicnn:max_pool", "MTT_musicnn:max_pool")}
    rows = head_study.run_study(data, sets, ["clip-logistic", *HEAD_KINDS], ["mean", "mean+max"], folds=3, seed=1)
    assert [(r["head"], r["pooling"]) for r in rows] == [("clip-logistic", "clip mean prob")] + [
        (h, p) for h in HEAD_KINDS for p in ("mean", "mean+max")]
    for row in rows:
        assert row["accuracy_mean"] >= 0.9, row
        assert len(row["folds"]) == 3 and 0.0 <= row["ece_after"] <= 1.0
        assert row["dims"] == 12 and row["fit_fraction_of_embed"] > 0
    assert capsys.readouterr().out.count("| both | 12 |") == len(rows)


def test_study_folds_are_genreflows_and_cover_every_track_once() -> None:
    data = _data(per_genre=6)
    folds = head_study.study_folds(data["genres"], 3, 42)
    tested = sorted(t for f in folds for t in f.test)
    assert tested == list(range(18))
    for fold in folds:
        assert not set(fold.train) & set(fold.test) and not set(fold.val) & set(fold.test)


def test_the_feature_cache_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second call reads the .npz and embeds nothing."""
    (tmp_path / "music" / "a").mkdir(parents=True)
    (tmp_path / "music" / "a" / "x.wav").write_bytes(b"0")
    data = _data(per_genre=2)
    calls: list[str] = []

    def fake_embed(folder: Path, embedders: dict) -> dict:
        (model,) = embedders
        calls.append(model)
        return {"tracks": data["tracks"], "genres": data["genres"], "clip_track": data["clip_track"],
                "features": {f"{model}:max_pool": data["features"][f"{model}:max_pool"]},
                "cpu_s_per_clip": 0.05, "wall_s_per_clip": 0.06}

    from genreflow.bench import embedding_probe
    from genreflow.model.musicnn import MusicnnEmbedder

    monkeypatch.setattr(embedding_probe, "embed_collection", fake_embed)
    monkeypatch.setattr(MusicnnEmbedder, "from_cache", classmethod(lambda cls, model, *a, **k: model))
    first = head_study.load_or_embed(tmp_path / "music", tmp_path / "work")
    second = head_study.load_or_embed(tmp_path / "music", tmp_path / "work")
    assert calls == list(head_study.MODELS)
    assert second["cache"] == first["cache"] and Path(second["cache"]).exists()
    assert second["tracks"] == data["tracks"] and second["cpu_s_per_clip"] == {m: 0.05 for m in head_study.MODELS}
    for name, array in first["features"].items():
        np.testing.assert_array_equal(second["features"][name], array)
    np.testing.assert_array_equal(second["clip_track"], data["clip_track"])


def test_folds_drawn_over_ids_are_numbered_like_the_clips() -> None:
    """``--track-ids path``: the folds genreflow draws over those ids, handed back as the tracks' numbers."""
    from genreflow.tasks.folds import make_folds

    data = _data(per_genre=6)
    ids = [f"/music/{g}/{i:02d}" for i, g in enumerate(data["genres"])]
    folds = head_study.study_folds(data["genres"], 3, 42, ids)
    table = head_study.pd.DataFrame({"track_id": ids, "genre": data["genres"], "artist": [None] * len(ids)})
    for ours, theirs in zip(folds, make_folds(table, 3, head_study.VAL_FRACTION, 42), strict=True):
        assert sorted(ids[i] for i in ours.test) == sorted(theirs.test)
        assert sorted(ids[i] for i in ours.train) == sorted(theirs.train)
