"""A seeded, labelled demo set of real MP3 files in the eight FMA genres.

Why: the pipeline needs a collection it can download nowhere, train on in
minutes on two CPU cores, and reach a known accuracy on. Each genre is a small
arrangement with its own tempo, percussion, timbre, harmony and register, so a
small CNN on 10 s log-mel spectrograms separates them easily, while tempo, key,
levels, patterns and note choices vary from track to track so no two tracks
are copies.

Everything is vectorised numpy: one-shot sounds (drum hits, plucked chords)
are rendered once per track and added at their onsets, and oscillators read a
single-cycle wavetable, so a 30 s stereo track synthesises in about 0.1 s on
one core. The MP3 encoding (libsndfile's libmp3lame writer, about 0.65 s a
track) costs several times more than the synthesis; its output is
deterministic, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from genreflow.storage.errors import GenreflowError

DEMO_GENRES: tuple[str, ...] = (
    "Electronic",
    "Experimental",
    "Folk",
    "Hip-Hop",
    "Instrumental",
    "International",
    "Pop",
    "Rock",
)

_TABLE_SIZE = 4096  # samples in one wavetable cycle; a power of two so the phase wraps with a mask
_NYQUIST_SHARE = 0.45  # harmonics above this share of the sample rate are dropped (no aliasing)
_MAX_PEAK = 0.89  # loudest track peak; the MP3 codec's ringing stays below 1.0
_MIN_PEAK = 0.3  # quietest track peak, for loudness variation across tracks
_NOISE_LOOP_S = 3.7  # length of the noise loop that long noise floors repeat
_EDGE_FADE_S = 0.02  # fade at both ends so a track starts and stops without a click

# Scales as semitone offsets from the key's root.
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_MAJOR_PENTA = (0, 2, 4, 7, 9)
# Hijaz, bhairav and kafi: the scales of the "International" melodies.
_WORLD_SCALES = ((0, 1, 4, 5, 7, 8, 10), (0, 1, 4, 5, 7, 8, 11), (0, 2, 3, 5, 7, 9, 10))

# Vowel formants (Hz) for the pop "voice": a, e, i, o, u.
_VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (390, 1990, 2550), (570, 840, 2410), (440, 1020, 2240))


class DemoError(GenreflowError, ValueError):
    """A bad request to the demo generator (unknown genre, negative seed)."""


# --------------------------------------------------------------------------- building blocks


def _hz(midi: float) -> float:
    """Frequency of a MIDI note (69 = A4 = 440 Hz)."""
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _table(amps: Sequence[float] | np.ndarray) -> np.ndarray:
    """One cycle of a waveform with the given harmonic amplitudes, peak 1, shape (_TABLE_SIZE,)."""
    amps = np.asarray(amps, dtype=np.float64)
    k = np.arange(1, len(amps) + 1)[:, None]
    x = np.arange(_TABLE_SIZE)[None, :] / _TABLE_SIZE
    wave = (amps[:, None] * np.sin(2.0 * np.pi * k * x)).sum(axis=0)
    return (wave / np.abs(wave).max()).astype(np.float32)


def _harmonics(f0: float, sr: int, count: int, power: float = 1.0, odd_only: bool = False) -> np.ndarray:
    """Amplitudes k**-power of the first harmonics of f0 that stay below Nyquist."""
    count = max(1, min(count, int(_NYQUIST_SHARE * sr / f0)))
    k = np.arange(1, count + 1, dtype=np.float64)
    amps = k**-power
    if odd_only:
        amps[1::2] = 0.0
    return amps


def _phase(freq: float | np.ndarray, n: int, sr: int, start: float = 0.0) -> np.ndarray:
    """Wavetable indices of an oscillator at a fixed frequency or along a frequency curve."""
    if np.ndim(freq) == 0:
        cycles = start + float(freq) / sr * np.arange(n)
    else:
        cycles = start + np.cumsum(np.asarray(freq, dtype=np.float64)[:n]) / sr
    return (cycles * _TABLE_SIZE).astype(np.int64) & (_TABLE_SIZE - 1)


def _decay(n: int, sr: int, tau: float, attack: float = 0.002) -> np.ndarray:
    """A percussive envelope: a short linear attack, then exponential decay with time constant tau."""
    t = np.arange(n, dtype=np.float32) / sr
    env = np.exp(-t / tau)
    ramp = max(1, int(attack * sr))
    env[:ramp] *= np.linspace(0.0, 1.0, ramp, dtype=np.float32)
    return env


def _swell(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """A sustained envelope: linear attack, flat, linear release at the end."""
    env = np.ones(n, dtype=np.float32)
    a = min(n, max(1, int(attack * sr)))
    r = min(n - a, max(1, int(release * sr)))
    env[:a] = np.linspace(0.0, 1.0, a, dtype=np.float32)
    if r > 0:
        env[n - r :] *= np.linspace(1.0, 0.0, r, dtype=np.float32)
    return env


def _noise(n: int, sr: int, rng: np.random.Generator, lo: float, hi: float, tilt: float = 0.0) -> np.ndarray:
    """Gaussian noise band-limited to about lo..hi Hz, spectrum tilted by f**tilt, rms 1."""
    bins = n // 2 + 1
    f = np.linspace(1.0, sr / 2.0, bins)
    gain = 1.0 / (1.0 + (lo / f) ** 4) / (1.0 + (f / hi) ** 4)
    if tilt:
        gain *= (f / 1000.0) ** tilt
    spectrum = (rng.standard_normal(bins) + 1j * rng.standard_normal(bins)) * gain
    x = np.fft.irfft(spectrum, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _noise_bed(n: int, sr: int, rng: np.random.Generator, lo: float, hi: float, tilt: float = 0.0) -> np.ndarray:
    """A long noise floor, tiled from a few seconds of band-limited noise (one long FFT costs more)."""
    loop = _noise(min(n, int(_NOISE_LOOP_S * sr)), sr, rng, lo, hi, tilt)
    return np.tile(loop, -(-n // len(loop)))[:n]


def _smooth_random(n: int, sr: int, rng: np.random.Generator, rate: float, lo: float, hi: float) -> np.ndarray:
    """A slowly wandering control curve between lo and hi, about `rate` new targets per second."""
    points = max(2, int(n / sr * rate) + 2)
    knots = rng.uniform(lo, hi, points)
    return np.interp(np.linspace(0, points - 1, n), np.arange(points), knots).astype(np.float32)


def _place(bus: np.ndarray, sound: np.ndarray, start: int, gain: float = 1.0) -> None:
    """Add a mono sound into a mono bus at a sample offset, cut at the bus's ends."""
    n = bus.shape[-1]
    if start >= n or start + len(sound) <= 0:
        return
    if start < 0:
        sound, start = sound[-start:], 0
    end = min(n, start + len(sound))
    bus[start:end] += gain * sound[: end - start]


class _Track:
    """One track being synthesised: its rng, a stereo mix and a wavetable cache."""

    def __init__(self, rng: np.random.Generator, seconds: float, sr: int) -> None:
        self.rng = rng
        self.sr = sr
        self.n = max(1, round(seconds * sr))
        self.seconds = self.n / sr
        self.mix = np.zeros((2, self.n), dtype=np.float32)
        self._tables: dict[tuple[str, int], np.ndarray] = {}

    def bus(self) -> np.ndarray:
        """An empty mono bus as long as the track."""
        return np.zeros(self.n, dtype=np.float32)

    def table(self, name: str, amps: np.ndarray) -> np.ndarray:
        """A wavetable, cached by timbre name and harmonic count (the only thing that varies)."""
        key = (name, len(amps))
        if key not in self._tables:
            self._tables[key] = _table(amps)
        return self._tables[key]

    def send(self, bus: np.ndarray, gain: float, pan: float = 0.0) -> None:
        """Mix a mono bus into the stereo mix with a constant-power pan (-1 left .. 1 right)."""
        theta = (pan + 1.0) * np.pi / 4.0
        self.mix[0] += (gain * np.cos(theta)) * bus
        self.mix[1] += (gain * np.sin(theta)) * bus

    def level(self, lo: float = 0.7, hi: float = 1.3) -> float:
        """A random part level, so the balance differs from track to track."""
        return float(self.rng.uniform(lo, hi))


def _room(track: _Track, taps: int, longest: float, amount: float) -> None:
    """Cheap stereo early reflections: a few delayed, quieter copies of the mix per channel."""
    rng = track.rng
    dry = track.mix.copy()
    for ch in range(2):
        delays = np.sort(rng.uniform(0.011, longest, taps))
        for i, delay in enumerate(delays):
            d = int(delay * track.sr)
            if d < track.n:
                gain = amount * (0.75**i) * rng.uniform(0.6, 1.0)
                track.mix[ch, d:] += gain * dry[1 - ch if i % 2 else ch, : track.n - d]


# --------------------------------------------------------------------------- instruments


def _kick(sr: int, rng: np.random.Generator, f_hi: float, f_lo: float, tau: float) -> np.ndarray:
    """A kick drum: a sine swept down from f_hi to f_lo, plus a short click."""
    n = int(sr * tau * 5)
    t = np.arange(n) / sr
    freq = f_lo + (f_hi - f_lo) * np.exp(-t / 0.03)
    body = np.sin(2.0 * np.pi * np.cumsum(freq) / sr).astype(np.float32) * _decay(n, sr, tau, 0.001)
    click = _noise(n, sr, rng, 1500.0, 8000.0) * _decay(n, sr, 0.004, 0.0005) * 0.15
    return body + click


def _snare(sr: int, rng: np.random.Generator, tone: float, tau: float, bright: float) -> np.ndarray:
    """A snare: a short pitched body plus a band of noise (the wires)."""
    n = int(sr * tau * 5)
    t = np.arange(n) / sr
    body = np.sin(2.0 * np.pi * tone * t).astype(np.float32) * _decay(n, sr, 0.05)
    wires = _noise(n, sr, rng, 900.0, bright) * _decay(n, sr, tau) * 0.35
    return 0.6 * body + wires


def _hat(sr: int, rng: np.random.Generator, tau: float, lo: float = 6500.0) -> np.ndarray:
    """A hi-hat or cymbal: high noise with a short or long decay."""
    n = int(sr * tau * 5)
    return _noise(n, sr, rng, lo, 16000.0) * _decay(n, sr, tau, 0.0005) * 0.3


def _clap(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A hand clap: three quick noise bursts and a short tail in the 1-3 kHz band."""
    n = int(sr * 0.35)
    noise = _noise(n, sr, rng, 900.0, 3500.0)
    env = _decay(n, sr, 0.06)
    for k in range(3):
        start = int(k * 0.011 * sr)
        env[start : start + int(0.01 * sr)] += _decay(int(0.01 * sr), sr, 0.004)
    return noise * env * 0.3


def _tom(sr: int, pitch: float) -> np.ndarray:
    """A tom: a kick-like sweep in a higher register."""
    n = int(sr * 0.6)
    t = np.arange(n) / sr
    freq = pitch * (1.0 + 0.4 * np.exp(-t / 0.05))
    return np.sin(2.0 * np.pi * np.cumsum(freq) / sr).astype(np.float32) * _decay(n, sr, 0.12)


def _pluck(
    track: _Track, midi: float, seconds: float, bright_tau: float, body_tau: float, count: int = 24, power: float = 1.0
) -> np.ndarray:
    """A plucked string: a bright tone that dies fast over a mellow tone that rings on."""
    sr, f = track.sr, _hz(midi)
    n = int(seconds * sr)
    idx = _phase(f, n, sr)
    bright = track.table(f"pluck{power}", _harmonics(f, sr, count, power))[idx]
    mellow = track.table("mellow", np.array([1.0, 0.35, 0.12]))[idx]
    return bright * _decay(n, sr, bright_tau, 0.0015) + 0.6 * mellow * _decay(n, sr, body_tau, 0.003)


def _sustain(
    track: _Track,
    name: str,
    amps: np.ndarray,
    midi: float,
    seconds: float,
    attack: float,
    release: float,
    vibrato: float = 0.0,
    detune_cents: float = 0.0,
) -> np.ndarray:
    """A held note from a wavetable, with optional vibrato (share of pitch) and detune."""
    sr = track.sr
    n = max(1, int(seconds * sr))
    f = _hz(midi) * 2.0 ** (detune_cents / 1200.0)
    if vibrato:
        lfo = track.table("sine", np.array([1.0]))[_phase(track.rng.uniform(4.5, 6.0), n, sr)]
        depth = vibrato * np.clip(np.arange(n, dtype=np.float32) / (0.3 * sr), 0.0, 1.0)  # vibrato fades in
        freq: float | np.ndarray = f * (1.0 + depth * lfo)
    else:
        freq = f
    idx = _phase(freq, n, sr, track.rng.random())
    return track.table(name, amps)[idx] * _swell(n, sr, attack, release)


def _chord_tones(root: int, scale: Sequence[int], degree: int, size: int = 3, step: int = 2) -> list[int]:
    """MIDI notes of a diatonic chord: every other scale note from the given degree upwards."""
    notes = []
    for i in range(size):
        d = degree + step * i
        notes.append(root + scale[d % len(scale)] + 12 * (d // len(scale)))
    return notes


def _steps(track: _Track, bpm: float, per_beat: int = 4) -> tuple[int, float]:
    """How many grid steps fit in the track, and the step length in seconds."""
    step = 60.0 / bpm / per_beat
    return int(np.ceil(track.seconds / step)), step


# --------------------------------------------------------------------------- genres


def _electronic(track: _Track) -> None:
    """Four-on-the-floor house/techno: kick every beat, off-beat hats, saw bass, square arpeggio."""
    rng, sr = track.rng, track.sr
    bpm = rng.uniform(120.0, 132.0)
    count, step = _steps(track, bpm)
    root = 33 + int(rng.integers(0, 12))  # A1..G#2
    prog = ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 0, 5, 4))[int(rng.integers(0, 4))]
    kick = _kick(sr, rng, rng.uniform(130, 180), rng.uniform(45, 55), rng.uniform(0.18, 0.3))
    closed, opened, clap = _hat(sr, rng, 0.02), _hat(sr, rng, rng.uniform(0.08, 0.16)), _clap(sr, rng)
    drums, synths = track.bus(), track.bus()
    arp_shape = rng.permutation(4) if rng.random() < 0.5 else np.arange(4)
    arp_octave = 36 + 12 * int(rng.integers(0, 2))
    for s in range(count):
        at = int(s * step * sr)
        chord = _chord_tones(root, _MINOR, prog[(s // 16) % 4], size=4)
        if s % 4 == 0:
            _place(drums, kick, at, rng.uniform(0.9, 1.0))
        if s % 4 == 2:
            _place(drums, opened, at, rng.uniform(0.5, 0.7))
            saw = _harmonics(_hz(chord[0]), sr, 10)
            _place(synths, _sustain(track, "saw", saw, chord[0], step * 1.6, 0.003, 0.03), at, 0.55)
        elif rng.random() < 0.85:
            _place(drums, closed, at, rng.uniform(0.25, 0.5))
        if s % 16 in (4, 12):
            _place(drums, clap, at, rng.uniform(0.7, 0.9))
        if rng.random() < 0.9:
            note = chord[int(arp_shape[s % 4])] + arp_octave
            lead = _sustain(
                track, "square", _harmonics(_hz(note), sr, 11, odd_only=True), note, step * 0.6, 0.002, 0.02
            )
            _place(synths, lead, at, 0.2 * rng.uniform(0.8, 1.0))
    t = np.arange(track.n) / sr
    synths *= (1.0 - 0.6 * np.exp(-(t % (4 * step)) / 0.07)).astype(np.float32)  # sidechain pump
    track.send(drums, track.level())
    track.send(synths, track.level(), pan=rng.uniform(-0.2, 0.2))
    _room(track, 4, 0.09, 0.15)


def _experimental(track: _Track) -> None:
    """No pulse: inharmonic drones, a swelling noise bed and irregular chirps, bursts and bells."""
    rng, sr, n = track.rng, track.sr, track.n
    sine = track.table("sine", np.array([1.0]))
    for _ in range(int(rng.integers(2, 4))):
        base = rng.uniform(70.0, 260.0)
        drone = track.bus()
        for ratio in np.array([1.0, 2.76, 5.40]) * rng.uniform(0.97, 1.03, 3):  # bell-like, inharmonic
            drone += sine[_phase(base * ratio, n, sr, rng.random())] / ratio
        drone *= _smooth_random(n, sr, rng, 0.4, 0.0, 1.0)
        track.send(drone, 0.25 * track.level(), pan=rng.uniform(-0.8, 0.8))
    bed = _noise_bed(n, sr, rng, rng.uniform(150, 400), rng.uniform(3000, 6000), tilt=-0.6)
    bed *= _smooth_random(n, sr, rng, 0.3, 0.3, 1.0)
    track.send(bed, 0.07 * track.level(), pan=rng.uniform(-0.5, 0.5))
    events = track.bus()
    for _ in range(int(rng.poisson(rng.uniform(1.8, 3.0) * track.seconds))):
        at = int(rng.uniform(0, track.seconds) * sr)
        kind = rng.random()
        if kind < 0.4:  # a sine chirp, up or down
            m = int(rng.uniform(0.15, 1.5) * sr)
            f0, f1 = rng.uniform(150, 4000, 2)
            freq = f0 * (f1 / f0) ** np.linspace(0.0, 1.0, m)
            sound = track.table("chirp", np.array([1.0, 0.3, 0.2]))[_phase(freq, m, sr)]
            sound = sound * _swell(m, sr, 0.01, 0.05)
        elif kind < 0.7:  # a filtered noise burst
            m = int(rng.uniform(0.05, 0.6) * sr)
            centre = rng.uniform(300, 8000)
            sound = _noise(m, sr, rng, centre / 1.5, centre * 1.5) * _decay(m, sr, m / sr / 3) * 0.5
        else:  # a metallic FM bell
            m = int(rng.uniform(0.5, 2.0) * sr)
            tt = np.arange(m) / sr
            fc, ratio = rng.uniform(200, 2500), rng.uniform(1.2, 3.7)
            index = 3.0 * np.exp(-tt / 0.3)
            sound = np.sin(2 * np.pi * fc * tt + index * np.sin(2 * np.pi * fc * ratio * tt))
            sound = sound.astype(np.float32) * _decay(m, sr, m / sr / 4)
        _place(events, sound, at, rng.uniform(0.3, 1.0))
    track.send(events, 0.6 * track.level(), pan=rng.uniform(-0.7, 0.7))
    _room(track, 6, 0.3, 0.25)


def _folk(track: _Track) -> None:
    """Strummed acoustic guitar in a major key, with a whistle or fiddle tune on top, no drums."""
    rng, sr = track.rng, track.sr
    waltz = rng.random() < 0.3
    bpm = rng.uniform(84.0, 112.0)
    count, step = _steps(track, bpm, per_beat=2)  # an eighth-note grid
    bar = 6 if waltz else 8
    root = 40 + int(rng.integers(0, 8))  # E2..B2
    prog = ((0, 3, 0, 4), (0, 4, 5, 3), (0, 3, 4, 4), (0, 5, 3, 4))[int(rng.integers(0, 4))]
    patterns = ("D.DUDU", "D.DUUU", "DUDUDU") if waltz else ("D.DU.UDU", "D.D.DUDU", "D.DUDUDU")
    strums = patterns[int(rng.integers(0, 3))]
    bright_tau, body_tau = rng.uniform(0.12, 0.25), rng.uniform(0.8, 1.4)
    spread = rng.uniform(0.008, 0.016)
    cache: dict[tuple[int, str], np.ndarray] = {}

    def voicing(degree: int) -> list[int]:
        tones = _chord_tones(root, _MAJOR, degree, size=3)
        return [tones[0], tones[2], tones[0] + 12, tones[1] + 12, tones[2] + 12, tones[0] + 24]

    def strum(degree: int, way: str) -> np.ndarray:
        if (degree, way) not in cache:
            notes = voicing(degree) if way == "D" else voicing(degree)[::-1][:4]
            out = np.zeros(int(1.6 * sr) + int(len(notes) * spread * sr), dtype=np.float32)
            for i, note in enumerate(notes):
                string = _pluck(track, note, 1.6, bright_tau, body_tau, count=16, power=1.4)
                _place(out, string, int(i * spread * sr), 1.0 - 0.06 * i)
            cache[(degree, way)] = out
        return cache[(degree, way)]

    guitar = track.bus()
    for s in range(count):
        at = int((s * step + rng.normal(0, 0.006)) * sr)
        degree = prog[(s // bar) % 4]
        if strums[s % bar] != ".":
            way = strums[s % bar]
            _place(guitar, strum(degree, way), at, rng.uniform(0.7, 0.9) * (1.0 if way == "D" else 0.6))
    track.send(guitar, 0.5 * track.level(), pan=rng.uniform(-0.3, 0.1))
    tune = track.bus()
    whistle = rng.random() < 0.6
    amps = np.array([1.0, 0.08, 0.03]) if whistle else _harmonics(_hz(root + 36), sr, 14, 1.2)
    at_s, melody_root = rng.uniform(0.0, 2.0) * step, root + 36
    while at_s < track.seconds:
        length = step * float(rng.choice([1, 2, 2, 3, 4]))
        if rng.random() < 0.85:
            note = melody_root + _MAJOR_PENTA[int(rng.integers(0, 5))] + 12 * int(rng.random() < 0.25)
            sound = _sustain(
                track, "whistle" if whistle else "fiddle", amps, note, length * 1.05, 0.06, 0.08, vibrato=0.004
            )
            _place(tune, sound, int(at_s * sr), rng.uniform(0.5, 0.8))
        at_s += length
    track.send(tune, 0.22 * track.level(), pan=rng.uniform(-0.1, 0.4))
    _room(track, 5, 0.12, 0.18)


def _hip_hop(track: _Track) -> None:
    """Boom-bap: a slow swung beat, long 808 sub bass under the kicks, dusty electric piano, vinyl crackle."""
    rng, sr = track.rng, track.sr
    bpm = rng.uniform(78.0, 96.0)
    count, step = _steps(track, bpm)
    swing = rng.uniform(0.08, 0.2) * step
    root = 28 + int(rng.integers(0, 10))  # E1..C#2
    prog = ((0, 3), (0, 5), (0, 3, 5, 4), (0, 0, 5, 6))[int(rng.integers(0, 4))]
    kicks = ((0, 7, 10), (0, 3, 8, 10), (0, 6, 9), (0, 8, 10, 11))[int(rng.integers(0, 4))]
    kick = _kick(sr, rng, rng.uniform(90, 130), rng.uniform(48, 60), rng.uniform(0.15, 0.25))
    snare = _snare(sr, rng, rng.uniform(170, 220), rng.uniform(0.12, 0.2), 6000.0)
    hat = _hat(sr, rng, rng.uniform(0.02, 0.04))
    rhodes_amps = np.array([1.0, 0.25, 0.05])
    drums, sub, keys = track.bus(), track.bus(), track.bus()
    for s in range(count):
        at = int((s * step + (swing if s % 2 else 0.0) + rng.normal(0, 0.004)) * sr)
        degree = prog[(s // 16) % len(prog)]
        chord = _chord_tones(root, _MINOR, degree, size=4)
        if s % 16 in kicks:
            _place(drums, kick, at, rng.uniform(0.85, 1.0))
            note = chord[0]
            m = int(rng.uniform(0.5, 1.0) * sr)
            glide = _hz(note) * (1.0 + 0.15 * np.exp(-np.arange(m) / sr / 0.04))
            boom = track.table("sine", np.array([1.0]))[_phase(glide, m, sr)] * _decay(m, sr, 0.5, 0.005)
            _place(sub, boom, at, 0.9)
        if s % 16 in (4, 12):
            _place(drums, snare, at, rng.uniform(0.85, 1.0))
        if s % 2 == 0 or rng.random() < 0.15:
            _place(drums, hat, at, rng.uniform(0.2, 0.45))
        if s % 16 == 0 or (s % 16 == 10 and rng.random() < 0.5):
            for note in [*chord[1:], chord[0] + 12]:
                tone = _sustain(track, "rhodes", rhodes_amps, note + 24, 4 * step * 3, 0.005, 0.3)
                _place(keys, tone * _decay(len(tone), sr, 1.2), at + int(rng.uniform(0, 0.02) * sr), 0.2)
    t = np.arange(track.n) / sr
    keys *= (1.0 + 0.25 * np.sin(2 * np.pi * rng.uniform(3.5, 6.0) * t)).astype(np.float32)  # tremolo
    sub = np.tanh(1.8 * sub)
    crackle = track.bus()
    pops = rng.integers(0, track.n, int(rng.uniform(15, 40) * track.seconds))
    crackle[pops] = rng.uniform(-1.0, 1.0, len(pops)) ** 3
    crackle += 0.02 * _noise_bed(track.n, sr, rng, 500.0, 9000.0, tilt=-0.5)
    track.send(drums, track.level())
    track.send(sub, 0.8 * track.level())
    track.send(keys, track.level(), pan=rng.uniform(-0.3, 0.3))
    track.send(crackle, 0.15 * track.level(), pan=rng.uniform(-0.2, 0.2))
    _room(track, 3, 0.06, 0.1)


def _instrumental(track: _Track) -> None:
    """Slow chamber piece: a swelling string pad, a cello pedal and a sparse piano melody, no drums."""
    rng, sr = track.rng, track.sr
    bpm = rng.uniform(60.0, 80.0)
    beat = 60.0 / bpm
    bar = 4 * beat
    scale = _MAJOR if rng.random() < 0.5 else _MINOR
    root = 48 + int(rng.integers(0, 8))  # C3..G3
    prog = ((0, 5, 3, 4), (0, 3, 5, 4), (5, 3, 0, 4), (0, 2, 3, 4))[int(rng.integers(0, 4))]
    cache: dict[int, np.ndarray] = {}
    strings, cello, piano = track.bus(), track.bus(), track.bus()

    def pad(degree: int) -> np.ndarray:
        if degree not in cache:
            out = np.zeros(int((bar + 1.0) * sr), dtype=np.float32)
            for note in _chord_tones(root, scale, degree, size=4):
                amps = _harmonics(_hz(note), sr, 14, 1.3)
                for cents in (-6.0, 6.0):
                    out += _sustain(
                        track,
                        "strings",
                        amps,
                        note,
                        bar + 1.0,
                        rng.uniform(0.4, 0.9),
                        1.0,
                        vibrato=0.003,
                        detune_cents=cents,
                    )
            cache[degree] = out
        return cache[degree]

    bars = int(np.ceil(track.seconds / bar))
    for b in range(bars):
        degree = prog[b % 4]
        _place(strings, pad(degree), int(b * bar * sr), rng.uniform(0.8, 1.0))
        if b % 2 == 0:
            low = root - 12 + scale[degree % 7]
            tone = _sustain(
                track, "cello", _harmonics(_hz(low), sr, 12, 1.4), low, 2 * bar + 0.5, 0.5, 1.0, vibrato=0.004
            )
            _place(cello, tone, int(b * bar * sr), 1.0)
    at_s = rng.uniform(0.5, 1.5) * beat
    while at_s < track.seconds:
        length = beat * float(rng.choice([1.0, 1.0, 2.0, 2.0, 3.0, 0.5]))
        if rng.random() < 0.8:
            degree = int(rng.integers(0, 7))
            note = root + 24 + scale[degree] + 12 * int(rng.random() < 0.2)
            key = _pluck(track, note, 2.5, rng.uniform(0.3, 0.5), rng.uniform(1.5, 2.5), count=12, power=1.6)
            _place(piano, key, int(at_s * sr), rng.uniform(0.5, 0.9))
        at_s += length
    track.send(strings, 0.18 * track.level(), pan=rng.uniform(-0.3, 0.3))
    track.send(cello, 0.3 * track.level(), pan=rng.uniform(-0.4, 0.0))
    track.send(piano, 0.45 * track.level(), pan=rng.uniform(0.0, 0.4))
    _room(track, 8, 0.45, 0.3)


def _international(track: _Track) -> None:
    """Raga/maqam style: a buzzing tanpura drone, a gliding sitar line and tabla in an odd metre."""
    rng, sr = track.rng, track.sr
    pulse = 60.0 / rng.uniform(180.0, 250.0)  # one eighth-note pulse of the cycle, seconds
    cycle = ((3, 2, 2), (2, 3, 2, 3), (3, 3, 2, 2, 2))[int(rng.integers(0, 3))]
    accents = np.cumsum((0, *cycle))[:-1]
    length = int(sum(cycle))
    scale = _WORLD_SCALES[int(rng.integers(0, 3))]
    sa = 48 + int(rng.integers(0, 8))  # the tonic, C3..G3
    drone = track.bus()
    buzz = _harmonics(_hz(sa - 5), sr, 40, 0.6)
    strings = [
        _sustain(track, "tanpura", buzz, note, 3.5, 0.01, 1.5) * _decay(int(3.5 * sr), sr, 1.6)
        for note in (sa - 5, sa, sa, sa - 12)
    ]
    at_s, i = 0.0, 0
    gap = rng.uniform(0.9, 1.3)
    while at_s < track.seconds:
        _place(drone, strings[i % 4], int(at_s * sr), rng.uniform(0.7, 0.9))
        at_s, i = at_s + gap * rng.uniform(0.97, 1.03), i + 1
    track.send(drone, 0.12 * track.level(), pan=rng.uniform(-0.4, 0.0))
    sitar = track.bus()
    at_s, degree, previous = rng.uniform(0, 2) * pulse, 0, sa + 12
    while at_s < track.seconds:
        dur = pulse * float(rng.choice([0.5, 0.5, 1.0, 1.0, 2.0, 3.0]))
        if rng.random() < 0.85:
            degree = int(np.clip(degree + rng.integers(-3, 4), -3, 12))  # a stepwise walk on the scale
            note = sa + 12 + scale[degree % 7] + 12 * (degree // 7)
            m = int(max(dur, 0.6) * sr)
            curve = np.full(m, _hz(note))
            if rng.random() < 0.4:  # meend: glide in from the previous note
                g = min(m, int(rng.uniform(0.03, 0.09) * sr))
                curve[:g] = np.geomspace(_hz(previous), _hz(note), g)
            amps = _harmonics(_hz(note), sr, 30, 0.7)
            tone = track.table("sitar", amps)[_phase(curve, m, sr)] * _decay(m, sr, rng.uniform(0.25, 0.45))
            _place(sitar, tone, int(at_s * sr), rng.uniform(0.6, 1.0))
            previous = note
        at_s += dur
    track.send(sitar, 0.3 * track.level(), pan=rng.uniform(0.0, 0.4))
    dum, na = _tom(sr, rng.uniform(75, 100)), track.table("tabla", np.array([1.0, 0.5, 0.35, 0.2]))
    ring_hz = rng.uniform(330, 520)
    m = int(0.5 * sr)
    ta = na[_phase(ring_hz, m, sr)] * _decay(m, sr, 0.12)
    tek = _noise(int(0.08 * sr), sr, rng, 2500.0, 7000.0) * _decay(int(0.08 * sr), sr, 0.012) * 0.5
    tabla = track.bus()
    subdivision = pulse / 2
    for s in range(int(track.seconds / subdivision) + 1):
        at = int((s * subdivision + rng.normal(0, 0.004)) * sr)
        pos = (s // 2) % length
        if s % 2 == 0 and pos in accents:
            _place(tabla, dum, at, rng.uniform(0.8, 1.0) if pos == 0 else rng.uniform(0.5, 0.7))
            _place(tabla, ta, at, rng.uniform(0.4, 0.6))
        elif s % 2 == 0 or rng.random() < 0.5:
            _place(tabla, ta if rng.random() < 0.5 else tek, at, rng.uniform(0.3, 0.7))
    track.send(tabla, 0.7 * track.level(), pan=rng.uniform(-0.2, 0.2))
    _room(track, 5, 0.15, 0.2)


def _pop(track: _Track) -> None:
    """Clean radio pop: kick/clap backbeat, eighth-note bass, bright chords and a formant 'voice' melody."""
    rng, sr = track.rng, track.sr
    bpm = rng.uniform(96.0, 124.0)
    count, step = _steps(track, bpm)
    root = 36 + int(rng.integers(0, 10))  # C2..A2
    prog = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (3, 4, 0, 0))[int(rng.integers(0, 4))]
    kick = _kick(sr, rng, rng.uniform(110, 150), rng.uniform(50, 60), rng.uniform(0.12, 0.2))
    snare, clap = _snare(sr, rng, rng.uniform(180, 240), 0.1, 9000.0), _clap(sr, rng)
    hat = _hat(sr, rng, rng.uniform(0.015, 0.03), 7500.0)
    sixteenths = rng.random() < 0.5
    chord_amps = np.array([1.0, 0.5, 0.3, 0.15, 0.1, 0.05])
    drums, bass, chords = track.bus(), track.bus(), track.bus()
    for s in range(count):
        at = int(s * step * sr)
        chord = _chord_tones(root, _MAJOR, prog[(s // 16) % 4], size=3)
        if s % 16 in (0, 8) or (s % 16 == 10 and rng.random() < 0.5):
            _place(drums, kick, at, rng.uniform(0.85, 1.0))
        if s % 16 in (4, 12):
            _place(drums, snare, at, 0.8)
            _place(drums, clap, at, 0.7)
        if s % 2 == 0 or sixteenths:
            _place(drums, hat, at, rng.uniform(0.25, 0.4) if s % 2 == 0 else rng.uniform(0.1, 0.2))
        if s % 2 == 0:
            tone = _sustain(track, "bass", np.array([1.0, 0.4, 0.15]), chord[0], step * 1.7, 0.004, 0.03)
            _place(bass, tone, at, 0.7)
        if s % 4 == 0:
            for note in chord:
                tone = _sustain(track, "keys", chord_amps, note + 24, step * 3.5, 0.005, 0.08)
                _place(chords, tone, at, 0.25)
    voice = track.bus()
    at_s = 0.0
    while at_s < track.seconds:
        dur = step * float(rng.choice([2, 2, 4, 4, 6, 8]))
        if rng.random() < 0.85:
            note = root + 28 + _MAJOR[int(rng.integers(0, 7))] + 12 * int(rng.random() < 0.2)  # E4..F#6
            f0 = _hz(note)
            formants = _VOWELS[int(rng.integers(0, 5))]
            k = np.arange(1, int(5000 / f0) + 1) * f0
            amps = sum(1.0 / (1.0 + ((k - f) / (60 + 0.06 * f)) ** 2) for f in formants) / np.sqrt(k / f0)
            sound = _sustain(track, f"voice{formants[0]}", amps, note, dur * 0.95, 0.03, 0.06, vibrato=0.005)
            _place(voice, sound, int(at_s * sr), rng.uniform(0.6, 0.9))
        at_s += dur
    track.send(drums, track.level())
    track.send(bass, track.level())
    track.send(chords, track.level(), pan=rng.uniform(-0.4, 0.4))
    track.send(voice, 0.35 * track.level(), pan=rng.uniform(-0.1, 0.1))
    _room(track, 5, 0.1, 0.18)


def _rock(track: _Track) -> None:
    """Guitar rock: two distorted power-chord guitars, root-note bass, loud kit with crashes and fills."""
    rng, sr = track.rng, track.sr
    bpm = rng.uniform(112.0, 160.0)
    count, step = _steps(track, bpm, per_beat=2)  # eighth notes
    root = 40 + int(rng.integers(0, 8))  # E2..B2
    prog = ((0, 10, 5, 0), (0, 8, 10, 0), (0, 5, 7, 5), (0, 3, 5, 3))[int(rng.integers(0, 4))]
    chug = rng.random() < 0.6
    kick = _kick(sr, rng, rng.uniform(110, 150), rng.uniform(55, 70), 0.12)
    snare = _snare(sr, rng, rng.uniform(180, 220), rng.uniform(0.15, 0.25), 10000.0)
    ride, crash = _hat(sr, rng, 0.08, 5000.0), _hat(sr, rng, 1.0, 3500.0)
    toms = [_tom(sr, p) for p in (200.0, 150.0, 110.0)]
    cache: dict[tuple[int, bool], np.ndarray] = {}

    def power_chord(offset: int, muted: bool, seconds: float) -> np.ndarray:
        if (offset, muted) not in cache:
            n = int(seconds * sr)
            out = np.zeros(n, dtype=np.float32)
            for note in (root + offset, root + offset + 7, root + offset + 12):
                amps = _harmonics(_hz(note), sr, 30 if not muted else 8)
                for cents in (-8.0, 8.0):
                    out += _sustain(
                        track, "muted" if muted else "saw", amps, note, seconds, 0.003, 0.02, detune_cents=cents
                    )
            cache[(offset, muted)] = out * (_decay(n, sr, 0.12) if muted else 1.0)
        return cache[(offset, muted)]

    bass_amps = np.array([1.0, 0.6, 0.4, 0.2, 0.1])
    guitars = [track.bus(), track.bus()]
    drums, bass = track.bus(), track.bus()
    for s in range(count):
        at = int(s * step * sr)
        offset = prog[(s // 8) % 4]
        phrase_end = (s // 8) % 4 == 3 and s % 8 >= 6
        for g in guitars:
            jitter = int(rng.normal(0, 0.004) * sr)
            if chug:
                _place(g, power_chord(offset, s % 8 not in (0, 3, 6), step * 1.1), at + jitter, 1.0)
            elif s % 4 == 0:
                _place(g, power_chord(offset, False, step * 4.05), at + jitter, 1.0)
        tone = _sustain(track, "rockbass", bass_amps, root + offset - 12, step * 0.95, 0.003, 0.02)
        _place(bass, tone, at, 0.6)
        if phrase_end:
            for k, tom in enumerate(toms):
                _place(drums, tom, at + int(k * step / 3 * sr), 0.8)
            continue
        if s % 4 == 0 or (s % 8 == 5 and rng.random() < 0.5):
            _place(drums, kick, at, rng.uniform(0.9, 1.0))
        if s % 4 == 2:
            _place(drums, snare, at, rng.uniform(0.9, 1.0))
        if s % 32 == 0:
            _place(drums, crash, at, 0.9)
        else:
            _place(drums, ride, at, rng.uniform(0.3, 0.5))
    for g, pan in zip(guitars, (-0.7, 0.7), strict=True):
        drive = rng.uniform(4.0, 9.0)
        shaped = np.tanh(drive * 0.25 * g)
        shaped = np.convolve(shaped, np.full(4, 0.25, dtype=np.float32), mode="same")  # cabinet roll-off
        track.send(shaped.astype(np.float32), 0.35 * track.level(), pan=pan)
    track.send(np.tanh(1.5 * bass), 0.5 * track.level())
    track.send(drums, 0.9 * track.level())
    _room(track, 4, 0.08, 0.12)


_ARRANGERS: dict[str, Callable[[_Track], None]] = {
    "Electronic": _electronic,
    "Experimental": _experimental,
    "Folk": _folk,
    "Hip-Hop": _hip_hop,
    "Instrumental": _instrumental,
    "International": _international,
    "Pop": _pop,
    "Rock": _rock,
}


# --------------------------------------------------------------------------- public API


def synthesize_track(genre: str, rng: np.random.Generator, seconds: float = 30.0, sr: int = 44100) -> np.ndarray:
    """Synthesise one track of a demo genre.

    Returns a float32 array [shape=(samples, 2)] in [-1, 1], stereo at ``sr`` Hz,
    with its peak drawn between 0.3 and 0.89 so loudness varies and nothing clips.
    """
    if genre not in _ARRANGERS:
        raise DemoError(f"unknown demo genre {genre!r}; choose from {', '.join(DEMO_GENRES)}")
    if seconds <= 0 or sr < 8000:
        raise DemoError(f"need seconds > 0 and sr >= 8000, got seconds={seconds}, sr={sr}")
    track = _Track(rng, seconds, sr)
    _ARRANGERS[genre](track)
    mix = track.mix - track.mix.mean(axis=1, keepdims=True)
    fade = min(track.n // 2, int(_EDGE_FADE_S * sr))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        mix[:, :fade] *= ramp
        mix[:, track.n - fade :] *= ramp[::-1]
    peak = float(np.abs(mix).max())
    target = rng.uniform(_MIN_PEAK, _MAX_PEAK)
    if peak > 0:
        mix *= target / peak
    return np.ascontiguousarray(mix.T, dtype=np.float32)


def track_rng(seed: int, genre: str, index: int) -> np.random.Generator:
    """The generator of one demo track, from (seed, genre's place in DEMO_GENRES, track index).

    Keyed this way, a track is the same whatever the set's size or genre subset.
    """
    if seed < 0 or index < 0:
        raise DemoError(f"seed and track index must be >= 0, got seed={seed}, index={index}")
    if genre not in DEMO_GENRES:
        raise DemoError(f"unknown demo genre {genre!r}; choose from {', '.join(DEMO_GENRES)}")
    return np.random.default_rng(np.random.SeedSequence([seed, DEMO_GENRES.index(genre), index]))


def demo_path(out_dir: str | Path, genre: str, index: int) -> Path:
    """Where demo track `index` of `genre` lives: <out_dir>/<genre>/<genre-lowercase>-<NNNN>.mp3."""
    return Path(out_dir) / genre / f"{genre.lower()}-{index:04d}.mp3"


def _write_mp3(path: Path, audio: np.ndarray, sr: int) -> None:
    """Encode to a temporary name beside `path`, then rename, so `path` is whole or absent.

    The hidden ``.part`` name matches no ``*.mp3`` glob; a hard kill can leave one behind, never a
    half file under the final name.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        sf.write(tmp, audio, sr, format="MP3", subtype="MPEG_LAYER_III")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_demo_set(
    out_dir: str | Path,
    tracks_per_genre: int = 12,
    seed: int = 0,
    seconds: float = 30.0,
    sr: int = 44100,
    genres: Sequence[str] = DEMO_GENRES,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> list[Path]:
    """Write a demo set as out_dir/<genre>/<genre-lowercase>-<NNNN>.mp3 and return the paths.

    One folder per genre, so the result is also a valid 'folder' source. Files
    that already exist are kept, so an interrupted run resumes where it stopped;
    each file appears atomically. ``progress(done, total)`` is called after
    every file, written or kept. ``workers`` > 1 encodes in that many processes.
    """
    if tracks_per_genre < 1 or seed < 0:
        raise DemoError(f"need tracks_per_genre >= 1 and seed >= 0, got {tracks_per_genre} and {seed}")
    unknown = [g for g in genres if g not in DEMO_GENRES]
    if unknown:
        raise DemoError(f"unknown demo genres {unknown}; choose from {', '.join(DEMO_GENRES)}")
    jobs = [(Path(out_dir), g, i, seed, seconds, sr) for g in genres for i in range(tracks_per_genre)]
    paths: list[Path] = []
    if workers > 1 and len(jobs) > 1:
        # Encoding dominates (about 0.7 s a track) and each track is independent: use the cores.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for done, path in enumerate(pool.map(_write_track, jobs), start=1):
                paths.append(path)
                if progress is not None:
                    progress(done, len(jobs))
        return paths
    for done, job in enumerate(jobs, start=1):
        paths.append(_write_track(job))
        if progress is not None:
            progress(done, len(jobs))
    return paths


def _write_track(job: tuple[Path, str, int, int, float, int]) -> Path:
    """Synthesise and encode one track unless it is already there."""
    out_dir, genre, index, seed, seconds, sr = job
    path = demo_path(out_dir, genre, index)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = synthesize_track(genre, track_rng(seed, genre, index), seconds=seconds, sr=sr)
        _write_mp3(path, audio, sr)
    return path


def is_demo_set(path: str | Path) -> bool:
    """True if `path` is a folder holding at least one <genre>/*.mp3 for a genre of DEMO_GENRES."""
    root = Path(path)
    if not root.is_dir():
        return False
    return any(
        p.is_file() and not p.name.startswith(".")
        for genre in DEMO_GENRES
        if (root / genre).is_dir()
        for p in (root / genre).glob("*.mp3")
    )
