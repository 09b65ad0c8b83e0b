"""Fixtures of the tasks tests: an FMA root and the seed's label CSV, with empty audio files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.collection_files import FMA_ROWS, touch, write_fma_tracks


@pytest.fixture
def fma_root(tmp_path: Path) -> Path:
    root = tmp_path / "fma"
    write_fma_tracks(root / "fma_metadata" / "tracks.csv", FMA_ROWS)
    for tid, subset, _, _, _ in FMA_ROWS:
        if tid == 142:
            continue
        name = f"{tid:06d}"
        if subset == "small":
            touch(root / "fma_small" / name[:3] / f"{name}.mp3")
        if subset in ("small", "medium"):
            touch(root / "fma_medium" / name[:3] / f"{name}.mp3")
    return root


@pytest.fixture
def seed_csv(tmp_path: Path) -> tuple[Path, Path]:
    audio = tmp_path / "fma_small"
    for tid in (2, 5, 140):
        touch(audio / f"{tid:06d}"[:3] / f"{tid:06d}.mp3")
    csv_path = tmp_path / "music_analysis.csv"
    csv_path.write_text("file_name,genre\n2,Hip-Hop\n5,Hip-Hop\n140,Folk\n")
    return csv_path, audio
