"""``python -m genreflow.bench.augment_domains``: how far spectral copies are from waveform copies, in dB.

For each audio file under ``--input`` (gtzan-mini in docs/model.md), its first
clip and each of the seed's four augmentations made both ways: librosa on the
audio then log_mel (``waveform``), and from the clip's STFT
(``spectral``). Prints, per augmentation, the mean absolute dB difference
between the two copies' log-mels over all cells and per group of mel bands,
their correlation, and for scale how far the waveform copy is from the clip
itself; ``--json`` keeps every band's figure.

Not a test: it reads real music, which the project does not ship.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from genreflow.model.audio import AUDIO_EXTENSIONS, AudioError, decode_audio, track_clips
from genreflow.model.augment_copies import augment_clip, augmentations, spectral_copies
from genreflow.model.mel import log_mel
from genreflow.model.params import AudioConfig, AugmentConfig

BAND_GROUPS = 8  # the table's rows: 128 bands in groups of 16


def band_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean |a - b| per band over clips and frames: a, b [shape=(n, n_mels, frames)] dB -> [shape=(n_mels,)]."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two (n, n_mels, frames) arrays of one shape, got {a.shape} and {b.shape}")
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=(0, 2))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of all cells of a and b."""
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def first_clips(paths: list[Path], audio: AudioConfig) -> tuple[np.ndarray, list[str]]:
    """The first clip of each file that decodes (float32 [shape=(n, clip_samples)]) and the files used."""
    clips, used = [], []
    for path in paths:
        try:
            clips.append(track_clips(decode_audio(path, audio.sample_rate, audio.clip_seconds), audio)[0])
        except AudioError as exc:
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        used.append(str(path))
    if not clips:
        raise SystemExit("no usable audio files")
    return np.stack(clips).astype(np.float32), used


def compare(clips: np.ndarray, audio: AudioConfig, augment: AugmentConfig) -> dict[str, Any]:
    """Per augmentation: spectral vs waveform and waveform vs the clip, overall and per band."""
    original = log_mel(clips, audio.sample_rate, audio.n_fft, audio.hop_length, audio.n_mels)
    plan = augmentations(augment)
    spectral = spectral_copies(clips, audio, [(kind, amount) for _, kind, amount in plan])
    centres = _band_centres_hz(audio)
    out: dict[str, Any] = {"clips": len(clips), "band_centres_hz": centres.tolist(), "augmentations": {}}
    for c, (name, kind, amount) in enumerate(plan):
        waveform = log_mel(np.stack([augment_clip(clip, audio.sample_rate, kind, amount) for clip in clips]),
                           audio.sample_rate, audio.n_fft, audio.hop_length, audio.n_mels)
        per_band = band_differences(spectral[c], waveform)
        out["augmentations"][name] = {
            "spectral_vs_waveform_db": float(per_band.mean()),
            "spectral_vs_waveform_per_band_db": per_band.tolist(),
            "spectral_vs_waveform_correlation": correlation(spectral[c], waveform),
            "waveform_vs_clip_db": float(band_differences(waveform, original).mean()),
            "spectral_vs_clip_db": float(band_differences(spectral[c], original).mean()),
        }
    return out


def _band_centres_hz(audio: AudioConfig) -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(n_mels=audio.n_mels + 2, fmax=audio.sample_rate / 2)[1:-1]


def format_table(result: dict[str, Any], markdown: bool = False) -> str:
    """Per augmentation: overall figures, then the mean per group of bands with its frequency range."""
    names = list(result["augmentations"])
    centres = result["band_centres_hz"]
    n_bands = len(centres)
    size = max(1, n_bands // BAND_GROUPS)
    groups = [(lo, min(lo + size, n_bands)) for lo in range(0, n_bands, size)]
    rows = [["", *names]]
    for label, key in (("spectral vs waveform, dB", "spectral_vs_waveform_db"),
                       ("correlation", "spectral_vs_waveform_correlation"),
                       ("waveform copy vs clip, dB", "waveform_vs_clip_db"),
                       ("spectral copy vs clip, dB", "spectral_vs_clip_db")):
        rows.append([label, *(f"{result['augmentations'][n][key]:.3f}" if key.endswith("correlation")
                              else f"{result['augmentations'][n][key]:.2f}" for n in names)])
    for lo, hi in groups:
        label = f"bands {lo}-{hi - 1} ({centres[lo]:,.0f}-{centres[hi - 1]:,.0f} Hz), dB"
        rows.append([label, *(f"{np.mean(result['augmentations'][n]['spectral_vs_waveform_per_band_db'][lo:hi]):.2f}"
                              for n in names)])
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join([lines[0], "|---|" + "---:|" * len(names), *lines[1:]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.augment_domains",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="a folder of audio files (searched recursively)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many files (sorted by path)")
    parser.add_argument("--json", type=Path, help="write every figure, per band, here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.input.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if args.limit is not None:
        paths = paths[: args.limit]
    if not paths:
        raise SystemExit(f"no audio files under {args.input}")
    audio, augment = AudioConfig(clips_per_track=1), AugmentConfig()
    start = time.perf_counter()
    clips, used = first_clips(paths, audio)
    result = {**compare(clips, audio, augment), "files": used, "seconds": time.perf_counter() - start}
    print(format_table(result, markdown=args.markdown))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
