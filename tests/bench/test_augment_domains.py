"""bench.augment_domains: per-band dB differences with known answers, and a run on two generated files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.bench import augment_domains


def test_band_differences_are_mean_absolute_db_per_band() -> None:
    a = np.zeros((2, 3, 4), np.float32)
    b = a.copy()
    b[:, 1, :] = -6.0  # band 1 is 6 dB lower everywhere
    b[0, 2, :2] = 4.0  # band 2: 4 dB in 2 of 8 cells
    np.testing.assert_allclose(augment_domains.band_differences(a, b), [0.0, 6.0, 1.0])
    with pytest.raises(ValueError, match="one shape"):
        augment_domains.band_differences(a, b[:, :2])


def test_run_on_two_files_reports_every_augmentation_and_band(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    sr = 22050
    t = np.arange(11 * sr) / sr
    for name, freqs in (("a", (220, 660)), ("b", (330, 1320, 2640))):
        y = sum(np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) for f in freqs)
        sf.write(tmp_path / f"{name}.wav", (0.1 * y).astype(np.float32), sr)
    (tmp_path / "silence.wav").write_bytes(b"")  # skipped with a line on stderr, the rest go on
    out = tmp_path / "domains.json"
    assert augment_domains.main(["--input", str(tmp_path), "--json", str(out), "--markdown"]) == 0
    result = json.loads(out.read_text())
    assert result["clips"] == 2 and len(result["files"]) == 2
    assert list(result["augmentations"]) == ["stretch0.8", "stretch0.9", "pitch+2", "pitch-2"]
    for figures in result["augmentations"].values():
        per_band = figures["spectral_vs_waveform_per_band_db"]
        assert len(per_band) == 128 and np.mean(per_band) == pytest.approx(figures["spectral_vs_waveform_db"])
        assert 0 < figures["spectral_vs_waveform_db"] < figures["waveform_vs_clip_db"]
        assert 0.5 < figures["spectral_vs_waveform_correlation"] <= 1.0
    printed = capsys.readouterr()
    assert "| spectral vs waveform, dB |" in printed.out and "bands 112-127" in printed.out
    assert "silence.wav" in printed.err
