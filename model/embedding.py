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

    network = embedder.network
    features = keras.Model(network.input, network.get_layer(embedder.feature).output, name="musicnn_features")
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
