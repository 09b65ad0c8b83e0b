"""``python -m genreflow.bench.open_set``: how often non-music comes out ``unknown``, beside test-split music.

Issue 23: a library holds speech, silence and noise, and a classifier must not
file them under a genre. This makes such inputs (speech spoken by Debian's
``espeak-ng``, white and pink noise, silence with clicks, a sine sweep), predicts
them and the data root's test-split tracks with a trained model as ``genreflow
predict`` does, and reports the share of each kind that is ``unknown`` at the
model's saved rule (model/open_set.py): by its probability threshold alone, by its novelty cut alone, and by
both, as ``genreflow predict`` decides. docs/model.md
("None of these genres") holds the results of::

    python -m genreflow.bench.open_set --data-root /tmp/gtz-openset --work /tmp/os-gtz
    python -m genreflow.bench.open_set --data-root /tmp/os/demo-root --work /tmp/os-demo

The generators are also what tests/flows/test_rebuild_flow.py feeds predict.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from genreflow.model.open_set import OpenSetRule

SR = 22_050
SENTENCES = (
    "The quick brown fox jumps over the lazy dog, and then it runs into the forest to hide.",
    "Please remember to water the plants on the balcony before you leave for the weekend.",
    "The meeting has been moved to Thursday afternoon at three o'clock in the small room.",
    "Twenty seven people were waiting at the bus stop when the rain finally started to fall.",
    "This is a recording of spoken words, not music, and no genre should be given to it.",
)
NON_MUSIC = ("speech", "white noise", "pink noise", "silence with clicks", "sine sweep")


class SpeechUnavailable(RuntimeError):
    """espeak-ng is not installed (Debian: apt-get install espeak-ng)."""


def speak(text: str, path: Path, speed: int = 160, voice: str = "en") -> Path:
    """``text`` spoken by espeak-ng into the wav ``path`` (22,050 Hz mono)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise SpeechUnavailable("espeak-ng is not installed: apt-get install espeak-ng")
    subprocess.run([binary, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return path


def white_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (0.3 * rng.standard_normal(int(seconds * SR))).clip(-1, 1).astype(np.float32)


def pink_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped by 1/sqrt(f) in the frequency domain, scaled to 0.3 RMS."""
    n = int(seconds * SR)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0
    y = np.fft.irfft(spectrum, n)
    return (0.3 * y / (y.std() + 1e-12)).clip(-1, 1).astype(np.float32)


def clicks(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Near silence (-70 dB hiss) with a short click at random times, about two a second."""
    y = 3e-4 * rng.standard_normal(int(seconds * SR))
    for at in rng.integers(0, len(y) - 64, size=max(1, int(2 * seconds))):
        y[at : at + 32] += rng.choice([-0.8, 0.8]) * np.exp(-np.arange(32) / 6.0)
    return y.clip(-1, 1).astype(np.float32)


def sine_sweep(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A logarithmic sine sweep from 40-80 Hz to 8-10 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    f0, f1 = rng.uniform(40, 80), rng.uniform(8000, 10000)
    k = np.log(f1 / f0) / seconds
    return (0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)).astype(np.float32)


SIGNALS = {"white noise": white_noise, "pink noise": pink_noise, "silence with clicks": clicks,
           "sine sweep": sine_sweep}


def make_non_music(folder: Path, per_kind: int = 3, seconds: float = 12.0, seed: int = 0,
                   kinds: tuple[str, ...] = NON_MUSIC) -> dict[str, list[Path]]:
    """``per_kind`` wav files of each kind in ``folder``; speech needs espeak-ng (SpeechUnavailable)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: dict[str, list[Path]] = {}
    for kind in kinds:
        paths = []
        for i in range(per_kind):
            path = folder / f"{kind.replace(' ', '-')}-{i}.wav"
            if kind == "speech":
                speak(" ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(2)), path, speed=140 + 20 * i)
            else:
                sf.write(path, SIGNALS[kind](seconds, rng), SR)
            paths.append(path)
        made[kind] = paths
    return made


def top_and_novelty(model_dir: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Each file's top probability and novelty as ``genreflow predict`` decides them (NaN for a file that fails;
    novelty NaN for a model saved without a novelty reference)."""
    from genreflow.model.files import model_audio
    from genreflow.model.predict import FilePrediction, load_classifier, predict_paths

    classifier = load_classifier(model_dir)
    results = list(predict_paths(classifier, paths, model_audio(model_dir), 1))
    return (np.array([r.genres[0][1] if isinstance(r, FilePrediction) else np.nan for r in results]),
            np.array([r.novelty if isinstance(r, FilePrediction) else np.nan for r in results]))


def unknown_shares(tops: np.ndarray, novelty: np.ndarray, rule: OpenSetRule) -> dict[str, float]:
    """The share of files ``unknown`` by the probability half of ``rule`` alone, its novelty half alone, and
    the whole rule (either half), as predict decides."""
    from genreflow.model.open_set import OpenSetRule

    def share(r: OpenSetRule) -> float:
        return float(np.mean([r.rejects(float(t), float(n)) for t, n in zip(tops, novelty, strict=True)]))

    return {"probability": share(OpenSetRule(rule.min_confidence)),
            "novelty": share(OpenSetRule(None, rule.max_novelty)), "rule": share(rule)}


def test_music(root: Path) -> list[Path]:
    """The data root's test-split tracks."""
    import pandas as pd

    tracks = pd.read_parquet(root / "tracks.parquet")
    return [Path(p) for p in tracks.loc[tracks["split"] == "test", "path"].astype(str)]


def main(argv: list[str] | None = None) -> int:
    from genreflow.model.files import resolve_model_dir
    from genreflow.model.open_set import effective_rule

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="a rebuilt data root (its promoted model)")
    parser.add_argument("--model", type=Path, default=None, help="a run under the data root (default: promoted)")
    parser.add_argument("--work", type=Path, required=True, help="where the non-music files are written")
    parser.add_argument("--per-kind", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model_dir = resolve_model_dir(args.model, str(args.data_root))
    made = make_non_music(args.work / "non-music", args.per_kind, args.seconds, args.seed)
    scored = {"music (test split)": top_and_novelty(model_dir, test_music(args.data_root))}
    scored.update({kind: top_and_novelty(model_dir, paths) for kind, paths in made.items()})
    rule = effective_rule(model_dir)
    result: dict[str, Any] = {
        "model": model_dir.name, "threshold": rule.min_confidence, "max_novelty": rule.max_novelty,
        "files": {kind: len(t) for kind, (t, _) in scored.items()},
        "median_top_probability": {kind: float(np.nanmedian(t)) for kind, (t, _) in scored.items()},
        "median_novelty": {kind: float(np.nanmedian(n)) if np.isfinite(n).any() else None
                           for kind, (_, n) in scored.items()},
        "unknown": {kind: unknown_shares(t, n, rule) for kind, (t, n) in scored.items()}}
    (args.work / "open_set.json").write_text(json.dumps(result, indent=2))
    print(f"model {model_dir.name}: threshold {rule.min_confidence}, novelty cut {rule.max_novelty}")
    print("| input | files | median top p | median novelty | unknown by probability | unknown by novelty | "
          "unknown (either: predict's default) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, (tops, novelty) in scored.items():
        shares = result["unknown"][kind]
        print(f"| {kind} | {len(tops)} | {np.nanmedian(tops):.2f} | {np.nanmedian(novelty):.2f} | "
              f"{shares['probability']:.0%} | {shares['novelty']:.0%} | {shares['rule']:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
