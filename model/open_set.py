"""The open-set decision: ``unknown`` where the model's top probability is under a threshold (issue 23).

Why: a library holds speech, silence, sound effects and genres the model never
saw, and a softmax must still give one of its genres to each. Here a file whose
(calibrated) top probability is under a threshold is ``unknown`` instead.

The default threshold is chosen on the validation tracks when the model is
trained (:func:`choose_threshold`): the largest one that keeps
:data:`KEEP_CORRECT` (95 %) of the correctly classified validation tracks, that
is the 5th percentile of their top probabilities. It is saved beside the model
as ``open_set.json`` (model/files.py OPEN_SET_FILE); a model saved without one
(before issue 23) gives no ``unknown``, as before. ``--min-confidence P``
overrides it for one run.

A top probability alone does not separate music from what is not music: a
calibrated head can be surer of white noise than of a real track (docs/model.md,
"None of these genres"). So a model also saves a *novelty reference*
(:class:`NoveltyReference`, ``open_set_reference.npz``): a sample of its
training tracks' pooled representations (musicnn's embedding for the embedding
family, the CNN's last hidden layer for the CNN), standardised. A file's novelty
is the mean distance of its own pooled representation to its
:data:`NEIGHBOURS` nearest training tracks, over the cut that keeps
:data:`KEEP_FAMILIAR` (95 %) of the validation and training tracks inside
(each training track measured against the others); past 1.0 the file
is unlike anything the model was trained on, and is ``unknown`` too.
``--max-novelty R`` moves that cut.

Plain numpy, no TensorFlow and no Prefect: the train stages, evaluate, predict
and tag call these.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from genreflow.model.files import NOVELTY_FILE, OPEN_SET_FILE
from genreflow.storage.errors import GenreflowError

UNKNOWN = "unknown"  # the decision for a file under the threshold (tasks/playlists.py files it so)
KEEP_CORRECT = 0.95  # the default threshold keeps this share of the correctly classified validation tracks
# A 5th percentile of fewer tracks is their minimum, whatever the model: with fewer correctly classified
# validation tracks than this, no threshold is saved (measured on the demo CNN, whose 5 validation tracks
# all scored 0.9998 or more: its minimum called half the test music unknown; docs/model.md).
MIN_CORRECT = 20
# The thresholds the report's coverage/accuracy table steps through (the chosen one is added to them).
CURVE_THRESHOLDS: tuple[float, ...] = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
KEEP_FAMILIAR = 0.95  # the novelty cut keeps this share of the validation and training tracks inside it
NEIGHBOURS = 5  # a file's novelty: its mean distance to this many nearest training tracks
# Training tracks kept as the reference (a seeded sample beyond it): 5,000 x 256 float32 is 5 MB, and a file's
# distances to them cost about a millisecond.
MAX_REFERENCE_TRACKS = 5000
# A feature (nearly) constant over the training tracks, a dead ReLU unit of the CNN say, is divided by at least
# this share of the features' mean spread: by its own tiny spread it would blow any other value up a million
# times, and a validation track's distance with it (measured: the demo CNN's cut rose so far that noise
# scored 0.02).
SCALE_FLOOR = 0.1


class OpenSetError(GenreflowError, ValueError):
    """A novelty reference that cannot be fitted or read."""


def choose_threshold(probs: np.ndarray, labels: np.ndarray, keep: float = KEEP_CORRECT,
                     min_correct: int = MIN_CORRECT) -> float | None:
    """The largest threshold that keeps at least ``keep`` of the correctly classified tracks; None without any.

    probs : np.ndarray [shape=(tracks, genres)], the model's (calibrated) probabilities of the validation
    tracks; labels : np.ndarray [shape=(tracks,)], their genre indices. With ``c`` the sorted top
    probabilities of the correct tracks, it is ``c[floor((1 - keep) * len(c))]``: a track is kept when its
    top probability is at least the threshold, so at most ``1 - keep`` of them fall under it. None with fewer
    than ``min_correct`` correct tracks: a percentile of so few is only their least sure one.
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected probabilities (tracks, genres) and one label a track, got {probs.shape} "
                         f"and {np.shape(labels)}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    correct = np.sort(probs.max(axis=1)[probs.argmax(axis=1) == np.asarray(labels)])
    if not len(correct) or len(correct) < min_correct:
        return None
    return float(correct[math.floor((1.0 - keep) * len(correct) + 1e-9)])


def coverage_curve(probs: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] = CURVE_THRESHOLDS
                   ) -> list[dict[str, float]]:
    """Per threshold: coverage (share of tracks not ``unknown``) and the accuracy of those covered.

    What a user trades when moving ``--min-confidence``: a higher threshold answers for fewer tracks, and
    (for a useful model) is right more often when it does. Accuracy is None where no track is covered.
    """
    probs = np.asarray(probs, np.float64)
    top = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = probs.argmax(axis=1) == np.asarray(labels) if len(probs) else np.zeros(0, bool)
    rows = []
    for t in sorted({float(t) for t in thresholds}):
        kept = top >= t
        rows.append({"threshold": t, "coverage": float(kept.mean()) if len(top) else 0.0,
                     "accuracy": float(correct[kept].mean()) if kept.any() else None, "tracks": int(kept.sum())})
    return rows


@dataclass(frozen=True)
class OpenSetRule:
    """When a file is ``unknown``: its top probability under ``min_confidence``, or its novelty over
    ``max_novelty`` (1.0: the cut chosen on validation). None turns that half off."""

    min_confidence: float | None = None
    max_novelty: float | None = None

    def rejects(self, top_prob: float, novelty: float) -> bool:
        """Whether a file of this top probability and novelty (NaN: none measured) is ``unknown``."""
        unsure = self.min_confidence is not None and not top_prob >= self.min_confidence
        return unsure or (self.max_novelty is not None and novelty > self.max_novelty)


def decide(top_genres: Sequence[Any], top_probs: Sequence[float], rule: OpenSetRule,
           novelty: Sequence[float] | None = None) -> list[Any]:
    """Each file's decision: its top genre, or ``unknown`` where ``rule`` says so (see :class:`OpenSetRule`).

    None (a failed file) stays None; a rule with neither half (an older model, nothing given) keeps every top
    genre; a file without a novelty (NaN, or no ``novelty`` at all) is judged by its probability alone.
    """
    novelty = [float("nan")] * len(top_genres) if novelty is None else novelty
    out = []
    for genre, prob, far in zip(top_genres, top_probs, novelty, strict=True):
        if genre is None or (isinstance(genre, float) and genre != genre) or genre == "":
            out.append(None)
        elif rule.rejects(float(prob), float(far)):
            out.append(UNKNOWN)
        else:
            out.append(genre)
    return out


def open_set_record(probs: np.ndarray, labels: np.ndarray, keep: float = KEEP_CORRECT) -> dict[str, Any]:
    """What ``open_set.json`` holds: the threshold chosen on these validation tracks, and how."""
    probs = np.asarray(probs, np.float64)
    correct = int((probs.argmax(axis=1) == np.asarray(labels)).sum()) if len(probs) else 0
    threshold = choose_threshold(probs, labels, keep) if len(probs) else None
    return {"threshold": threshold, "keep_correct": keep, "chosen_on": "validation",
            "rule": f"the {round((1 - keep) * 100)}th percentile of the top probability of the correctly "
                    f"classified validation tracks (none with fewer than {MIN_CORRECT} of them)",
            "validation_tracks": len(probs), "validation_correct": correct}


def model_threshold(folder: str | os.PathLike[str]) -> float | None:
    """The threshold saved with the model in ``folder``; None for a model without one (no ``unknown``)."""
    path = Path(folder) / OPEN_SET_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("threshold")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def effective_rule(folder: str | os.PathLike[str], min_confidence: float | None = None,
                   max_novelty: float | None = None) -> OpenSetRule:
    """The open-set rule of a run: ``--min-confidence`` where given, else the model's own threshold; and
    ``--max-novelty`` where given, else 1.0 (the saved cut) for a model with a novelty reference."""
    has_reference = (Path(folder) / NOVELTY_FILE).is_file()
    return OpenSetRule(min_confidence if min_confidence is not None else model_threshold(folder),
                       max_novelty if max_novelty is not None else 1.0 if has_reference else None)


# ---------------------------------------------------------------- novelty


@dataclass(frozen=True)
class NoveltyReference:
    """Training tracks' pooled representations, standardised, and the distance cut: what a file is compared with.

    ``tracks`` [shape=(n, dims)] float32, already ``(x - mean) / scale``; ``cut`` the mean distance to the
    ``neighbours`` nearest of them that keeps :data:`KEEP_FAMILIAR` of the validation and training tracks
    inside (:func:`fit_novelty`).
    """

    mean: np.ndarray
    scale: np.ndarray
    tracks: np.ndarray
    neighbours: int
    cut: float

    def distances(self, vectors: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Each vector's mean Euclidean distance to its ``neighbours`` nearest reference tracks [shape=(n,)].

        ``exclude_self`` skips the nearest one (a reference track's distance to itself, 0).
        """
        x = (np.atleast_2d(np.asarray(vectors, np.float64)) - self.mean) / self.scale
        ref = self.tracks.astype(np.float64)
        k = min(self.neighbours + int(exclude_self), len(ref))
        out = np.empty(len(x))
        ref_sq = np.square(ref).sum(axis=1)
        for start in range(0, len(x), 1024):  # 1,024 x 5,000 distances at a time: 40 MB
            part = x[start : start + 1024]
            sq = np.maximum(np.square(part).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * part @ ref.T, 0.0)
            nearest = np.sqrt(np.partition(sq, k - 1, axis=1)[:, :k])
            nearest = np.sort(nearest, axis=1)[:, int(exclude_self):]
            out[start : start + len(part)] = nearest.mean(axis=1)
        return out

    def novelty(self, vectors: np.ndarray) -> np.ndarray:
        """Each vector's distance over the cut [shape=(n,)]: past 1.0 it is unlike the training tracks."""
        return self.distances(vectors) / self.cut

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write it as a plain .npz (arrays and numbers only: it loads without pickle)."""
        with open(path, "wb") as f:
            f.write(self.to_bytes())

    def to_bytes(self) -> bytes:
        """The .npz bytes :meth:`save` writes."""
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean.astype(np.float64), scale=self.scale.astype(np.float64),
                 tracks=self.tracks.astype(np.float32), neighbours=np.int64(self.neighbours),
                 cut=np.float64(self.cut))
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NoveltyReference:
        """Read one :meth:`save` wrote; OpenSetError naming the file where it is not one."""
        try:
            with np.load(path, allow_pickle=False) as data:
                reference = cls(mean=data["mean"], scale=data["scale"], tracks=data["tracks"],
                                neighbours=int(data["neighbours"]), cut=float(data["cut"]))
        except (OSError, ValueError, KeyError) as exc:
            raise OpenSetError(f"cannot read the novelty reference {path}: {exc}") from None
        dims = reference.mean.shape
        if reference.tracks.ndim != 2 or reference.tracks.shape[1:] != dims or reference.scale.shape != dims \
                or not len(reference.tracks) or not reference.cut > 0:
            raise OpenSetError(f"{path} is not a novelty reference: shapes {reference.tracks.shape}, {dims}, "
                               f"cut {reference.cut}")
        return reference


def fit_novelty(train_vectors: np.ndarray, val_vectors: np.ndarray, keep: float = KEEP_FAMILIAR,
                neighbours: int = NEIGHBOURS, max_tracks: int = MAX_REFERENCE_TRACKS, seed: int = 0
                ) -> NoveltyReference:
    """The novelty reference of a model: its training tracks, and the cut chosen on its validation tracks.

    train_vectors [shape=(train tracks, dims)], val_vectors [shape=(val tracks, dims)]: each track's pooled
    representation, as predict pools a file's windows. The standardisation is the training tracks'. The cut
    is the ``keep`` quantile of the validation tracks' distances together with each reference track's
    distance to its nearest others (itself left out): a few dozen validation tracks alone made a cut that
    moved by half with one track (measured on the demo CNN: 27 % of test music past a cut from 5 validation
    tracks, 7 % past one from those and 44 training tracks; docs/model.md).
    """
    train = np.asarray(train_vectors, np.float64)
    if train.ndim != 2 or len(train) < 2:
        raise OpenSetError(f"a novelty reference needs two training tracks or more, got shape {train.shape}")
    mean, spread = train.mean(axis=0), train.std(axis=0)
    scale = np.maximum(spread, max(SCALE_FLOOR * float(spread.mean()), 1e-12))
    if len(train) > max_tracks:
        train = train[np.sort(np.random.default_rng(seed).choice(len(train), max_tracks, replace=False))]
    reference = NoveltyReference(mean, scale, ((train - mean) / scale).astype(np.float32),
                                 min(neighbours, len(train) - 1), 1.0)
    val = np.asarray(val_vectors, np.float64).reshape(-1, train.shape[1])
    distances = np.concatenate([reference.distances(val) if len(val) else np.zeros(0),
                                reference.distances(reference.tracks * scale + mean, exclude_self=True)])
    cut = float(np.quantile(distances, keep))
    return replace(reference, cut=cut if cut > 0 else 1.0)


def reference_tracks(track_ids: Sequence[str], max_tracks: int = MAX_REFERENCE_TRACKS, seed: int = 0
                     ) -> list[str]:
    """The training tracks a reference keeps, sorted: all of them, or a seeded sample of ``max_tracks``.

    Chosen before a model computes their representations, so that a large collection costs at most
    ``max_tracks`` tracks' inference (the CNN's reference).
    """
    unique = sorted({str(t) for t in track_ids})
    if len(unique) <= max_tracks:
        return unique
    return [unique[i] for i in np.sort(np.random.default_rng(seed).choice(len(unique), max_tracks, replace=False))]


def load_novelty(folder: str | os.PathLike[str]) -> NoveltyReference | None:
    """The novelty reference saved with the model in ``folder``; None for a model without one."""
    path = Path(folder) / NOVELTY_FILE
    return NoveltyReference.load(path) if path.is_file() else None


def novelty_record(reference: NoveltyReference, val_vectors: np.ndarray, keep: float = KEEP_FAMILIAR
                   ) -> dict[str, Any]:
    """What open_set.json says of the novelty reference: how the cut was chosen, on how many tracks."""
    val = np.asarray(val_vectors, np.float64)
    beyond = reference.novelty(val) > 1.0 if len(val) else np.zeros(0, bool)
    return {"cut": reference.cut, "neighbours": reference.neighbours, "keep_familiar": keep,
            "reference_tracks": len(reference.tracks), "dims": int(reference.tracks.shape[1]),
            "validation_tracks": len(val), "validation_beyond": float(beyond.mean()) if len(val) else None,
            "rule": f"the {round(keep * 100)}th percentile of the validation and reference tracks' mean distance "
                    f"to their {reference.neighbours} nearest training tracks (standardised; a training track's "
                    "own left out)"}
