"""The demo source: a folder source that writes the synthetic demo set (demo_synth.py) first, with its own split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genreflow.tasks.sources.folder import FolderSource


class DemoSource(FolderSource):
    """The synthetic demo set: a folder source that writes its folder first when it is absent or incomplete.

    An interrupted generation resumes: finished files are kept. Like FMA, the
    demo set comes with its own split, by the number in each file's name: of
    every ten tracks of a genre, the tenth is test and the ninth validation. A
    hash split of a dozen tracks a genre would leave some genres without a test
    track; this one tests every genre from 10 tracks a genre up, and stays put
    when the set grows.
    """

    name = "demo"

    def __init__(self, root: Path, tracks_per_genre: int = 12, seed: int = 0, workers: int = 1) -> None:
        super().__init__(root, name="demo")
        self.tracks_per_genre, self.seed, self.workers = tracks_per_genre, seed, workers

    def needs_writing(self) -> bool:
        """Whether the folder lacks the demo set, or part of it (an interrupted generation)."""
        from genreflow.tasks.sources.demo_synth import DEMO_GENRES, is_demo_set

        complete = sum(1 for _ in self.root.glob("*/*.mp3")) >= self.tracks_per_genre * len(DEMO_GENRES)
        return not is_demo_set(self.root) or not complete

    def read(self) -> pd.DataFrame:
        from genreflow.tasks.sources.demo_synth import generate_demo_set

        if self.needs_writing():
            generate_demo_set(self.root, tracks_per_genre=self.tracks_per_genre, seed=self.seed,
                              workers=self.workers)
        table = super().read()
        table["split"] = [demo_split(track_id) for track_id in table["track_id"]]
        return table


def demo_split(track_id: str) -> str | None:
    """The demo set's own split of ``<Genre>/<genre>-NNNN``: NNNN % 10 of 9 is test, 8 val, else train."""
    number = track_id.rsplit("-", 1)[-1]
    if not number.isdigit():
        return None  # not a file of the generator's: split by hash like any other
    return {9: "test", 8: "val"}.get(int(number) % 10, "train")
