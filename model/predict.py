"""Genre prediction for audio files of any length with a trained model directory.

A file is cut into clips by the rule training used (genreflow.model.audio
window_starts: whole windows from the start and a last one flush with the end,
so every second is heard), except that a file shorter than one window is
zero-padded whatever its length; its genre probabilities are the mean over its
windows, as the evaluation's track-level vote does.

Both model families are served the same way; only a window's model input
differs (:meth:`Classifier.window_input`): the CNN (model/cnn.py) takes the
window's log-mel dB [shape=(n_mels, frames)], an embedding classifier
(model/embedding.py) musicnn's log-mel patches of it [shape=(P, 187, 96)],
the window resampled to 16 kHz by musicnn's own front end.

``predict_file`` classifies one file with its own batch (the quick path of a
handful of files); ``predict_files`` streams many files and batches windows
across them, so the model runs on full batches (the library path).

An embedding classifier with a track-level head (issue 22) decides a file as
the evaluation decides a track: the mean of its windows' embeddings through
the head (:func:`predict_windows`, :func:`file_probabilities`), so one file
of many windows gets one decision, not a vote. Its window probabilities are
each window's own decision (a one-window file's). Older clip-level models
keep the mean of their windows' probabilities.

A model saved with a novelty reference (model/open_set.py) also gives each
file its novelty: its windows' representations pooled (the window embeddings
of an embedding classifier, the last hidden layer of the CNN) and compared
with the training tracks'. :func:`predict_windows` returns those
representations beside the probabilities, from the same pass of the network.
"""

from __future__ import annotations

import json
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from genreflow.model.audio import AUDIO_EXTENSIONS, AudioError, clip_windows, decode_audio, pad_tolerance
from genreflow.model.cnn import cnn_representation_model
from genreflow.model.embedding import (
    is_embedding_classifier,
    is_track_classifier,
    patches_per_window,
    pool_windows,
    track_head_model,
    window_embedding_model,
    window_patches,
)
from genreflow.model.files import LABELS_FILE, MODEL_FILE
from genreflow.model.mel import log_mel
from genreflow.model.open_set import NoveltyReference, load_novelty
from genreflow.model.params import PREDICT_TOP_K, AudioConfig
from genreflow.model.quiet_tf import keras
from genreflow.storage.errors import GenreflowError

# Windows an embedding classifier runs at once, whatever the batch size asked: 16 windows of 10 s are 48
# musicnn patches, about 0.6 GB of activations on the CPU; 64 windows (192 patches) took 3.4 GB and twice
# the time per patch (the full MSD_musicnn front end, measured with TF 2.21 on 2 cores).
EMBEDDING_BATCH = 16


class PredictError(GenreflowError, ValueError):
    """A model directory or input that prediction cannot use."""


@dataclass(frozen=True)
class Classifier:
    """A loaded model and its genres, in label order: a CNN or an embedding classifier."""

    model: keras.Model
    genres: list[str]
    model_dir: Path

    @property
    def is_embedding(self) -> bool:
        """Whether the model is the embedding family's (musicnn patches in), not the CNN (log-mel in)."""
        return is_embedding_classifier(self.model)

    @property
    def is_track_level(self) -> bool:
        """Whether a file is decided by its windows' pooled embeddings (a track-level head), not their vote."""
        return is_track_classifier(self.model)

    @cached_property
    def embedding_model(self) -> keras.Model:
        """A track-level classifier's windows to their embeddings (its own layers, model/embedding.py)."""
        return window_embedding_model(self.model)

    @cached_property
    def head_model(self) -> keras.Model:
        """A track-level classifier's pooled embeddings to calibrated probabilities."""
        return track_head_model(self.model)

    @cached_property
    def novelty_reference(self) -> NoveltyReference | None:
        """The training tracks a file's novelty is measured against; None for a model saved without them."""
        return load_novelty(self.model_dir)

    @property
    def gives_representations(self) -> bool:
        """Whether :func:`predict_windows` returns each window's representation: a track-level head pools
        them for its decision, and a novelty reference needs them."""
        return self.is_track_level or self.novelty_reference is not None

    @cached_property
    def representation_model(self) -> keras.Model:
        """Windows to (representations, probabilities) in one pass: for the CNN, its last hidden layer (the
        softmax layer's input); for an embedding classifier, its window embeddings (then the head)."""
        if self.is_embedding:
            return keras.Model(self.model.inputs, [self.embedding_model.output, self.model.output])
        return cnn_representation_model(self.model)

    @property
    def clip_shape(self) -> tuple[int, int | None]:
        """(n_mels, frames) the CNN takes; frames None for a model that pools over time (any length)."""
        if self.is_embedding:
            raise PredictError("an embedding classifier takes musicnn patches, not log-mel clips: "
                               "see Classifier.patches_per_window")
        _, n_mels, frames, _ = self.model.input_shape
        return int(n_mels), None if frames is None else int(frames)

    @property
    def patches_per_window(self) -> int | None:
        """musicnn patches an embedding classifier takes per window (3 for 10 s windows); None for the CNN."""
        return int(self.model.input_shape[1]) if self.is_embedding else None

    def window_input(self, clips: np.ndarray, audio: AudioConfig) -> np.ndarray:
        """The model's input for decoded windows (:func:`window_input` for this model's family)."""
        return window_input(clips, audio, embedding=self.is_embedding)


def window_input(clips: np.ndarray, audio: AudioConfig, embedding: bool = False) -> np.ndarray:
    """A model's input for audio windows: log-mel dB for the CNN, musicnn's patches for an embedding classifier.

    clips : np.ndarray [shape=(n, clip_samples)], float audio at ``audio.sample_rate`` Hz
    Returns float32 np.ndarray [shape=(n, n_mels, frames)] (CNN: ``audio``'s log-mel, model/mel.py) or
    [shape=(n, P, 187, 96)] (embedding: resampled to 16 kHz, musicnn's log-mel patches, model/embedding.py
    ``window_patches``).
    """
    if embedding:
        return window_patches(clips, audio.sample_rate)
    return log_mel(clips, audio.sample_rate, audio.n_fft, audio.hop_length, audio.n_mels)


@dataclass(frozen=True)
class FilePrediction:
    """Top genres of one file: [(genre, mean probability)], best first; ``genre`` the open-set decision (the
    top genre or ``unknown``, model/open_set.py), None where none was made (the top genre stands)."""

    path: Path
    genres: list[tuple[str, float]]
    n_windows: int
    genre: str | None = None
    novelty: float = float("nan")  # over the saved cut (model/open_set.py); NaN for a model without a reference

    @property
    def decision(self) -> str:
        """The file's genre for a user: the open-set decision, else the top genre."""
        return self.genre if self.genre is not None else (self.genres[0][0] if self.genres else "")


@dataclass(frozen=True)
class PredictionFailure:
    """A file that could not be classified, and why."""

    path: Path
    reason: str


def load_classifier(model_dir: Path) -> Classifier:
    """Load ``model_dir``/model.keras (safe mode: no code from the file runs) and labels.json."""
    model_dir = Path(model_dir)
    model_path, labels_path = model_dir / MODEL_FILE, model_dir / LABELS_FILE
    for path in (model_path, labels_path):
        if not path.exists():
            raise PredictError(f"{path} not found: is {model_dir} a finished training run?")
    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except (ValueError, TypeError, OSError) as exc:  # not a .keras zip, or code that safe mode refuses to run
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictError(f"cannot load {model_path} (safe mode): {first[:300]}") from None
    genres = json.loads(labels_path.read_text())
    n_outputs = int(model.output_shape[-1])
    if not isinstance(genres, list) or len(genres) != n_outputs:
        raise PredictError(f"{labels_path} must list {n_outputs} genres, the model's outputs")
    return Classifier(model=model, genres=[str(g) for g in genres], model_dir=model_dir)


def predict_clips(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of windows' model input (:func:`window_input`).

    x : np.ndarray [shape=(n, n_mels, frames)], log-mel dB, float16 or float32, for the CNN;
        [shape=(n, P, 187, 96)] musicnn patches for an embedding classifier (run EMBEDDING_BATCH
        windows at a time at most)
    Returns np.ndarray [shape=(n, n_classes)], float32.
    """
    if is_embedding_classifier(model):
        expected = tuple(int(d) for d in model.input_shape[1:])
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise PredictError(f"an embedding classifier takes musicnn patches of shape (n, "
                               f"{', '.join(map(str, expected))}), got shape {x.shape}")
        batch_size, channel = min(batch_size, EMBEDDING_BATCH), ()
    elif x.ndim != 3:
        raise PredictError(f"clips must be (n, n_mels, frames), got shape {x.shape}")
    else:
        channel = (np.newaxis,)
    n_classes = int(model.output_shape[-1])
    out = np.empty((len(x), n_classes), dtype=np.float32)
    for start in range(0, len(x), batch_size):
        batch = np.asarray(x[start : start + batch_size], dtype=np.float32)[(..., *channel)]
        out[start : start + len(batch)] = np.asarray(model.predict_on_batch(batch))
    return out


def _top(genres: list[str], probs: np.ndarray, k: int = PREDICT_TOP_K) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(genres[i], float(probs[i])) for i in order]


def check_audio_settings(classifier: Classifier, audio: AudioConfig) -> None:
    """Refuse audio settings whose clips the model cannot take.

    The CNN: another n_mels or clip length. An embedding classifier: windows
    that give another number of musicnn patches (patches_per_window).
    """
    if classifier.is_embedding:
        takes, gives = classifier.patches_per_window, patches_per_window(audio)
        if gives != takes:
            raise PredictError(
                f"the audio settings give {audio.clip_seconds:g} s windows of {gives} musicnn patch(es), the "
                f"model takes {takes} patch(es) a window: use the settings the model was trained with"
            )
        return
    n_mels, frames = classifier.clip_shape
    if audio.n_mels != n_mels or frames not in (None, audio.frames):
        raise PredictError(
            f"the audio settings give {audio.n_mels} x {audio.frames} clips, the model takes "
            f"{n_mels} x {frames}: use the settings the model was trained with"
        )


def file_windows(path: str | Path, audio: AudioConfig, classifier: Classifier | None = None
                 ) -> tuple[np.ndarray, float]:
    """The model input of each window of a whole file, and its decoded duration in seconds.

    Returns (windows, seconds): log-mel windows [shape=(n_windows, n_mels, frames)] float32 (the
    CNN's, also without a classifier) or, for an embedding classifier, musicnn patches
    [shape=(n_windows, P, 187, 96)] (:func:`window_input`). Raises AudioError for a file that
    cannot be decoded.
    """
    y = decode_audio(path, audio.sample_rate, max_seconds=None)
    clips = clip_windows(y, audio.clip_samples, clips_per_track=None, pad_short=True,
                         tolerance=pad_tolerance(audio.clip_samples))
    x = window_input(clips, audio) if classifier is None else classifier.window_input(clips, audio)
    return x, len(y) / audio.sample_rate


def predict_windows(classifier: Classifier, x: np.ndarray, batch_size: int = 64
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Each window's probabilities, and its representation where the model needs one for a file
    (:attr:`Classifier.gives_representations`): the window embeddings a track-level head pools, the
    CNN's last hidden layer that a novelty reference compares.

    x : the windows' model input (:func:`window_input`). Returns (probs [shape=(n, n_genres)] float32,
    representations [shape=(n, dims)] float32 or None): a track-level head's window probabilities are the
    head on each window's own embedding, what the saved model gives a window.
    """
    if not classifier.gives_representations:
        return predict_clips(classifier.model, x, batch_size), None
    if classifier.is_embedding:
        expected = tuple(int(d) for d in classifier.model.input_shape[1:])
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise PredictError(f"an embedding classifier takes musicnn patches of shape (n, "
                               f"{', '.join(map(str, expected))}), got shape {x.shape}")
    elif x.ndim != 3:
        raise PredictError(f"clips must be (n, n_mels, frames), got shape {x.shape}")
    step = min(batch_size, EMBEDDING_BATCH) if classifier.is_embedding else batch_size
    channel = () if classifier.is_embedding else (np.newaxis,)
    dims = int(classifier.representation_model.output_shape[0][-1])
    representations = np.empty((len(x), dims), np.float32)
    probs = np.empty((len(x), len(classifier.genres)), np.float32)
    for start in range(0, len(x), step):
        batch = np.asarray(x[start : start + step], dtype=np.float32)[(..., *channel)]
        features, window_probs = classifier.representation_model.predict_on_batch(batch)
        representations[start : start + len(batch)] = np.asarray(features)
        probs[start : start + len(batch)] = np.asarray(window_probs)
    return probs, representations


def file_probabilities(classifier: Classifier, probs: np.ndarray, representations: np.ndarray | None
                       ) -> np.ndarray:
    """A file's probabilities from its windows' (:func:`predict_windows`): the head on their pooled embeddings
    for a track-level head, else the mean of the windows' probabilities. [shape=(n_genres,)], float32."""
    if not classifier.is_track_level or representations is None:
        return np.asarray(probs, np.float32).mean(axis=0)
    return np.asarray(classifier.head_model.predict_on_batch(pool_windows(representations)), np.float32)[0]


def file_novelty(classifier: Classifier, representations: np.ndarray | None) -> float:
    """A file's novelty (model/open_set.py): its windows' pooled representation against the training tracks',
    over the saved cut; NaN for a model without a novelty reference."""
    reference = classifier.novelty_reference
    if reference is None or representations is None or not len(representations):
        return float("nan")
    return float(reference.novelty(pool_windows(representations))[0])


def predict_file(classifier: Classifier, path: Path, audio: AudioConfig, top_k: int = PREDICT_TOP_K
                 ) -> FilePrediction:
    """The ``top_k`` genres of one audio file; raises AudioError for files that cannot be decoded."""
    check_audio_settings(classifier, audio)
    mels, _ = file_windows(path, audio, classifier)
    probs, representations = predict_windows(classifier, mels)
    return FilePrediction(path=Path(path), genres=_top(classifier.genres, file_probabilities(
        classifier, probs, representations), top_k), n_windows=len(mels),
        novelty=file_novelty(classifier, representations))


def check_regular_file(path: str) -> None:
    """Raise AudioError unless ``path`` is a regular file: never open a FIFO (it would block the worker) or a device.

    "no such file" for a missing file or a dangling link, else the system's reason (a link loop, no permission).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AudioError("no such file") from None
    except OSError as exc:
        raise AudioError(f"cannot open: {(exc.strerror or type(exc).__name__).lower()}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" \
            if stat.S_ISSOCK(mode) else "a device"
        raise AudioError(f"not a regular file ({kind})")
    if not os.access(path, os.R_OK):
        raise AudioError("cannot open: permission denied")


@dataclass(frozen=True)
class FileWindows:
    """Every window's genre probabilities of one file, or the reason it could not be read.

    probs : np.ndarray [shape=(n_windows, n_genres)], float32, in label order; None for a failure.
    file_probs : np.ndarray [shape=(n_genres,)], a track-level head's decision from the pooled window
    embeddings (:func:`file_probabilities`); None for a model whose windows vote.
    novelty : the file's novelty (:func:`file_novelty`); NaN for a model without a novelty reference.
    """

    path: str
    duration_s: float
    probs: np.ndarray | None
    error: str = ""
    file_probs: np.ndarray | None = None
    novelty: float = float("nan")

    @property
    def mean(self) -> np.ndarray | None:
        """The file's probabilities, as predict_file and the evaluation decide: a track-level head's pooled
        decision, else the mean over the windows (the evaluation's vote)."""
        if self.file_probs is not None:
            return self.file_probs
        return None if self.probs is None else self.probs.mean(axis=0)


def predict_files(classifier: Classifier, paths: Iterable[str | Path], audio: AudioConfig,
                  batch_size: int = 64) -> Iterator[FileWindows]:
    """Window probabilities of many files, in the order given, their windows batched across files.

    A file of three windows alone would run the model on a batch of three; here
    windows queue up across files and the model runs on full batches of
    ``batch_size`` (the last one excepted), whatever the files' lengths. A file's
    result comes once all its windows are done. The batches depend only on the
    files and their order, so the same list gives the same numbers. A file that
    is missing or cannot be decoded yields a failure and the rest go on.
    """
    check_audio_settings(classifier, audio)
    files: deque[tuple[str, float, int, str]] = deque()  # path, seconds, windows (-1: failed), error
    queued: list[np.ndarray] = []  # decoded windows not yet run, in order
    done: list[np.ndarray] = []  # probabilities of windows run, not yet handed out
    done_embeddings: list[np.ndarray] = []  # the windows' representations (predict_windows), beside them

    def run(count: int) -> None:
        windows = np.concatenate(queued)
        queued[:] = [windows[count:]] if count < len(windows) else []
        probs, embeddings = predict_windows(classifier, windows[:count], batch_size)
        done.append(probs)
        if embeddings is not None:
            done_embeddings.append(embeddings)

    def hand_out() -> Iterator[FileWindows]:
        probs = np.concatenate(done) if done else np.empty((0, len(classifier.genres)), np.float32)
        embeddings = np.concatenate(done_embeddings) if done_embeddings else None
        used = 0
        while files and files[0][2] <= len(probs) - used:
            path, seconds, count, error = files.popleft()
            if count < 0:
                yield FileWindows(path, float("nan"), None, error)
                continue
            window_probs = probs[used : used + count]
            representations = None if embeddings is None else embeddings[used : used + count]
            file_probs = file_probabilities(classifier, window_probs, representations) \
                if classifier.is_track_level else None
            yield FileWindows(path, seconds, window_probs, file_probs=file_probs,
                              novelty=file_novelty(classifier, representations))
            used += count
        done[:] = [probs[used:]]
        if embeddings is not None:
            done_embeddings[:] = [embeddings[used:]]

    for path in map(str, paths):
        try:
            check_regular_file(path)
            # bytes: libsndfile takes a name that is not UTF-8 only as bytes (soundfile encodes str strictly)
            mels, seconds = file_windows(os.fsencode(path), audio, classifier)
        except (AudioError, OSError) as exc:
            files.append((path, float("nan"), -1, str(exc) or type(exc).__name__))
        else:
            files.append((path, seconds, len(mels), ""))
            queued.append(mels)
        waiting = sum(len(m) for m in queued)
        if waiting >= batch_size:
            run(waiting - waiting % batch_size)
        yield from hand_out()
    if queued:
        run(sum(len(m) for m in queued))
    yield from hand_out()


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, and the audio files under folders (recursively, sorted)."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            yield path


def predict_paths(
    classifier: Classifier, paths: list[Path], audio: AudioConfig, top_k: int = PREDICT_TOP_K
) -> Iterator[FilePrediction | PredictionFailure]:
    """Predictions (``top_k`` genres each) for files and folders; a file that cannot be read yields a failure,
    not an error."""
    for path in expand_paths(paths):
        if not path.exists():
            yield PredictionFailure(path, "no such file")
            continue
        try:
            yield predict_file(classifier, path, audio, top_k)
        except (AudioError, OSError) as exc:
            yield PredictionFailure(path, str(exc) or type(exc).__name__)

