"""The embedding model family: musicnn's embedding of each clip, and a logistic-regression head on it.

A CNN trained from scratch on a few hundred tracks cannot learn what a network
pretrained on a large music collection knows (issue 14; docs/model.md). This
family keeps musicnn fixed (model/musicnn.py) and learns only a multinomial
logistic regression on standardised clip embeddings: sklearn's lbfgs fit, its
C chosen on the validation tracks, the recipe bench/embedding_probe.py measured
(0.916 track accuracy on gtzan-mini).

The fitted head is saved as one Keras model that takes musicnn's own input the
whole way to genre probabilities: a window's 3 s log-compressed mel patches,
musicnn up to the chosen layer on each patch, the mean over the window's patches (the clip
embedding the embed stage stores), the standardisation and the softmax layer.
So it is a ``model.keras`` like the CNN's (loaded in safe mode, no pickle), and
prediction and export need no second file; :func:`head_model` is its last two
layers, which the evaluation runs on the stored embeddings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from genreflow.model.metrics import track_probabilities
from genreflow.model.musicnn import HOP_LENGTH, N_MELS, PATCH_FRAMES, SAMPLE_RATE, clip_patches
from genreflow.model.params import AudioConfig
from genreflow.storage.errors import GenreflowError

if TYPE_CHECKING:
    import keras

    from genreflow.model.musicnn import MusicnnEmbedder
    from genreflow.model.track_head import TrackHead

NAME = "musicnn embedding + logistic regression"
# C of the logistic regression tried on the validation tracks (the probe's grid); the first wins ties.
C_GRID: tuple[float, ...] = (0.1, 1.0, 0.01)
DEFAULT_C = 0.1  # when there are no validation tracks to choose with
MAX_ITER = 3000
INPUT_NAME, NORM_LAYER, OUTPUT_LAYER = "musicnn_patches", "embedding_norm", "genre_probabilities"


class EmbeddingError(GenreflowError, ValueError):
    """Embeddings a head cannot be fitted on, or audio the embedding model cannot take."""


def patches_per_window(audio: AudioConfig) -> int:
    """Back-to-back 3 s patches musicnn cuts from one window of ``audio``'s clips (3 for 10 s clips)."""
    samples = math.ceil(audio.clip_samples * SAMPLE_RATE / audio.sample_rate)
    return max(1, (1 + samples // HOP_LENGTH) // PATCH_FRAMES)


def window_patches(clips: np.ndarray, sr: int) -> np.ndarray:
    """The classifier's input for audio windows: musicnn's log-compressed mel patches of each.

    clips : np.ndarray [shape=(windows, samples)], float in [-1, 1] (or int16 PCM) at ``sr`` Hz
    Returns np.ndarray [shape=(windows, patches, 187, 96)], float32.
    """
    clips = np.atleast_2d(np.asarray(clips))
    if len(clips) == 0:
        return np.zeros((0, 1, PATCH_FRAMES, N_MELS), np.float32)
    return np.stack(clip_patches(clips, sr)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class HeadFit:
    """A standardised multinomial logistic regression: ``softmax(((x - mean) / scale) @ coef.T + intercept)``.

    ``coef`` [shape=(genres, dims)] and ``intercept`` in the order of ``genres``.
    """

    genres: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    c: float
    val_track_accuracy: float | None

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Genre probabilities [shape=(clips, genres)] of embeddings ``x``, in numpy."""
        logits = ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def _fit_once(x: np.ndarray, labels: np.ndarray, genres: Sequence[str], c: float, seed: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, coef, intercept) of a logistic regression of C ``c`` on standardised ``x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs' convergence warning at the largest C
        model = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed).fit(scaler.transform(x), labels)
    classes = [str(g) for g in model.classes_]
    coef, intercept = model.coef_, model.intercept_
    if len(classes) == 2 and coef.shape[0] == 1:  # sklearn's binary form: one logit, for the second class
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    order = [classes.index(g) for g in genres]
    return scaler.mean_, scaler.scale_, coef[order], intercept[order]


def fit_head(x_train: np.ndarray, train_index: pd.DataFrame, x_val: np.ndarray, val_index: pd.DataFrame,
             genres: Sequence[str], seed: int = 0) -> HeadFit:
    """Fit the head on the training clips' embeddings, its C chosen by the validation tracks' accuracy.

    Raises EmbeddingError when a genre has no training clip (the head could never predict it).
    """
    genres = [str(g) for g in genres]
    if len(x_train) == 0:
        raise EmbeddingError("no training clips to fit the embedding head on")
    labels = train_index["genre"].astype(str).to_numpy()
    missing = sorted(set(genres) - set(labels))
    if missing:
        raise EmbeddingError(f"no training clips of genre(s) {missing}: the embedding head cannot learn them")
    x_train = np.asarray(x_train, np.float64)
    best_c, best_score = DEFAULT_C, None
    if len(x_val):
        for c in C_GRID:
            fit = HeadFit(tuple(genres), *_fit_once(x_train, labels, genres, c, seed), c=c, val_track_accuracy=None)
            score = float(track_probabilities(val_index, fit.probabilities(x_val), genres)["correct"].mean())
            if best_score is None or score > best_score:
                best_c, best_score = c, score
    return HeadFit(tuple(genres), *_fit_once(x_train, labels, genres, best_c, seed), c=best_c,
                   val_track_accuracy=best_score)


def build_classifier(embedder: MusicnnEmbedder, head: HeadFit, window_patch_count: int) -> keras.Model:
    """One Keras model from a window's musicnn patches to genre probabilities (see the module docstring)."""
    import keras
    from keras import layers

    features = embedder.feature_model()
    window = keras.Input((window_patch_count, PATCH_FRAMES, embedder.arch.n_mels), name=INPUT_NAME)
    x = layers.TimeDistributed(features, name="musicnn_per_patch")(window)
    x = layers.GlobalAveragePooling1D(name="window_embedding")(x)
    x = layers.Normalization(mean=head.mean, variance=np.square(head.scale), name=NORM_LAYER)(x)
    dense = layers.Dense(len(head.genres), activation="softmax", name=OUTPUT_LAYER)
    probs = dense(x)
    dense.set_weights([head.coef.T.astype(np.float32), head.intercept.astype(np.float32)])
    return keras.Model(window, probs, name="musicnn_embedding_classifier")


def head_model(classifier: keras.Model) -> keras.Model:
    """The standardisation and softmax of an embedding classifier: clip embeddings to genre probabilities."""
    import keras

    norm, dense = classifier.get_layer(NORM_LAYER), classifier.get_layer(OUTPUT_LAYER)
    embedding = keras.Input((int(dense.kernel.shape[0]),), name="embedding")
    return keras.Model(embedding, dense(norm(embedding)), name="embedding_head")


def is_embedding_classifier(model: keras.Model) -> bool:
    """Whether a loaded model is this family's (it has the head's layers), not a CNN."""
    names = {layer.name for layer in model.layers}
    return NORM_LAYER in names and OUTPUT_LAYER in names and model.inputs[0].name.startswith(INPUT_NAME)


def describe_head(head: HeadFit) -> dict[str, Any]:
    """What the head's fit chose, for the model's summary and the report."""
    return {"C": head.c, "val_track_accuracy": head.val_track_accuracy, "dims": int(head.coef.shape[1])}


# ---------------------------------------------------------------- the track-level head (issue 22)
#
# A track is one vector, its clips' embeddings pooled, and the head's kind, hyperparameters and temperature
# are chosen by cross-validation over the training tracks only (model/track_head.py). The saved model is still
# one Keras model from a window's patches to probabilities (a one-window file's decision), with the window
# embedding and the head as named layers, so that a file of several windows is decided as the evaluation
# decides a track: its windows' embeddings pooled, then the head (:func:`track_decision`).

TRACK_NAME = "musicnn embedding + track-level head"
# The default head, by measurement (bench/head_study.py, docs/model.md): a logistic regression on the mean of
# a track's MSD max_pool embeddings (since issue 22's second round, max_pool and the tag scores side by side:
# model/musicnn.py DEFAULT_FEATURE), C from the clip-level head's grid by inner CV, calibrated by a temperature.
# On gtzan-mini's 5 folds (two draws) it scored 0.920 +- 0.057 and 0.900 +- 0.087 (the clip-level head 0.920
# and 0.900 on the same folds), ECE 0.038 and 0.042 after calibration, fitted in about 2 % of the embed
# stage's CPU time. The RBF SVM and the MLP were no better on both draws (the MLP at 20 times the cost), nor
# were mean+max pooling, other layers or MTT_musicnn's features beside MSD's.
TRACK_HEAD_KINDS: tuple[str, ...] = ("logistic",)
TRACK_POOLING = "mean"
WINDOW_EMBEDDING_LAYER = "window_embedding"
HEAD_PREFIX = "embedding"  # the head's layers: embedding_norm (NORM_LAYER), ..., embedding_temperature
TEMPERATURE_LAYER = f"{HEAD_PREFIX}_temperature"


def fit_track_level_head(x_train: np.ndarray, train_index: pd.DataFrame, genres: Sequence[str], seed: int = 0,
                         artists: dict[str, Any] | None = None, kinds: Sequence[str] = TRACK_HEAD_KINDS,
                         pooling: str = TRACK_POOLING) -> TrackHead:
    """The track-level head of the training clips' embeddings: pooled by track, chosen and calibrated by inner CV.

    x_train : np.ndarray [shape=(clips, dims)] with train_index's track_id and genre, the training
    tracks' clips only (the validation tracks stay for the choice between families); artists maps a
    track to its artist where known, so that the inner folds keep an artist's tracks together.
    Raises EmbeddingError when a genre has no training track.
    """
    from genreflow.model.track_head import TrackHeadError, fit_track_head, pool_clips

    if len(x_train) == 0:
        raise EmbeddingError("no training clips to fit the embedding head on")
    track_ids = train_index["track_id"].astype(str).to_numpy()
    keys, pooled = pool_clips(np.asarray(x_train, np.float64), track_ids, pooling)
    genre_of = pd.Series(train_index["genre"].astype(str).to_numpy(), index=track_ids).groupby(level=0).first()
    groups = None if artists is None else [artists.get(str(k)) for k in keys]
    try:
        return fit_track_head(pooled, genre_of.loc[keys].to_numpy(), [str(g) for g in genres], groups, kinds,
                              pooling, seed=seed)
    except TrackHeadError as exc:
        raise EmbeddingError(str(exc)) from None


def build_track_classifier(embedder: MusicnnEmbedder, head: TrackHead, window_patch_count: int) -> keras.Model:
    """One Keras model from a window's musicnn patches to calibrated genre probabilities, the head track-level.

    Layers: musicnn up to the embedder's feature on each patch, their mean (``window_embedding``: the clip
    embedding the embed stage stores), then model/track_head.py's head on it, its standardisation named
    ``embedding_norm`` and its temperature ``embedding_temperature``.
    """
    import keras
    from keras import layers

    from genreflow.model.track_head import head_probabilities_layer

    if head.pooling != "mean":
        raise EmbeddingError(f"the saved model pools windows by their mean; a {head.pooling!r} head cannot be saved")
    features = embedder.feature_model()
    window = keras.Input((window_patch_count, PATCH_FRAMES, embedder.arch.n_mels), name=INPUT_NAME)
    x = layers.TimeDistributed(features, name="musicnn_per_patch")(window)
    x = layers.GlobalAveragePooling1D(name=WINDOW_EMBEDDING_LAYER)(x)
    probs = head_probabilities_layer(head, x, prefix=HEAD_PREFIX, output_name=OUTPUT_LAYER)
    return keras.Model(window, probs, name="musicnn_track_classifier")


def is_track_classifier(model: keras.Model) -> bool:
    """Whether an embedding classifier's head is track-level (it pools a file's windows), not clip-level."""
    return is_embedding_classifier(model) and TEMPERATURE_LAYER in {layer.name for layer in model.layers}


def window_embedding_model(classifier: keras.Model) -> keras.Model:
    """A track-level classifier's first part: a window's patches to its embedding [shape=(windows, dims)]."""
    import keras

    return keras.Model(classifier.inputs, classifier.get_layer(WINDOW_EMBEDDING_LAYER).output,
                       name="window_embedding_model")


def track_head_model(classifier: keras.Model, calibrated: bool = True) -> keras.Model:
    """A track-level classifier's head: pooled embeddings to probabilities (``calibrated``) or to its logits."""
    import keras

    end = classifier.output if calibrated else classifier.get_layer(TEMPERATURE_LAYER).input
    return keras.Model(classifier.get_layer(NORM_LAYER).input, end, name="track_head")


def pool_windows(embeddings: np.ndarray) -> np.ndarray:
    """A file's (or track's) vector from its windows' embeddings [shape=(windows, dims)]: their mean, as trained."""
    return np.asarray(embeddings, np.float32).mean(axis=0, keepdims=True)


def track_decision(head: keras.Model, embeddings: np.ndarray, track_ids: np.ndarray) -> np.ndarray:
    """Each clip's row of its track's probabilities: the head on the mean of the track's clip embeddings.

    embeddings : np.ndarray [shape=(clips, dims)]; track_ids [shape=(clips,)]. Returns
    [shape=(clips, genres)], float32; a track's clips share one row, so the mean over them (the
    evaluation's track vote) is the track's decision.
    """
    from genreflow.model.track_head import pool_clips

    keys, pooled = pool_clips(np.asarray(embeddings, np.float64), np.asarray(track_ids).astype(str))
    probs = np.asarray(head.predict_on_batch(pooled.astype(np.float32)), np.float32)
    return probs[np.searchsorted(keys, np.asarray(track_ids).astype(str))]


def describe_track_head(head: TrackHead) -> dict[str, Any]:
    """What the track-level head's fit chose, for the model's summary, embedding.json and the report."""
    from genreflow.model.track_head import describe

    return {"head_level": "track", **describe(head)}
