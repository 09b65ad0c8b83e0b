"""musicnn (Pons and Serra, 2019), rebuilt in Keras 3 and loaded from its TF1 checkpoint.

musicnn's own package cannot be installed next to genreflow (it pins numpy<1.17)
and its code needs TF1 graph mode, so genreflow keeps only its weights
(model/weights.py fetches them) and rebuilds the network here, layer for layer,
from the wheel's ``models.py``:

- front-end: batch norm of the log-compressed mel input, then "timbral" filters (7 frames x
  38 or 67 mel bands, valid) and "temporal" filters (128, 64 or 32 frames x 1 band,
  'same'), each followed by ReLU, batch norm and a max over frequency;
- mid-end: three 1-d convolutions of 7 frames over the concatenated front-end
  features, with residual connections, densely concatenated;
- back-end: max and mean over time, interleaved as TF1 flattened them, batch norm,
  dense 200 (ReLU, batch norm: the "penultimate" features), dense 50, sigmoid.

Layer order and checkpoint names follow TF1's creation order (``conv2d``,
``conv2d_1``, ... ``batch_normalization_10``). Batch norm always runs in
inference mode with the checkpoint's moving statistics (epsilon 0.001, as
``tf.compat.v1.layers.batch_normalization``); dropout is inference-time identity.

The audio front end reproduces musicnn's ``extractor.batch_data``: librosa's mel
power spectrogram at 16 kHz (n_fft 512, hop 256, 96 bands, centred with reflect
padding as librosa 0.7 did), cast to float16, then ``log10(10000 x + 1)``
computed in float32. musicnn ran under NumPy 1, whose value-based casting did
that product in float32; under NumPy 2 the same line stays in float16 and
overflows to inf for any mel power above 6.55, which is what made the published
code give non-finite features and nearly flat tags on current stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genreflow.storage.errors import GenreflowError

if TYPE_CHECKING:
    import keras

# musicnn's configuration.py and extractor.py.
SAMPLE_RATE = 16_000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
PATCH_SECONDS = 3.0
# librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1, as extractor() computes it.
PATCH_FRAMES = 187
LOG_SCALE = 10_000.0  # log10(LOG_SCALE * power + 1): musicnn's "logC" compression
FLOAT16_MAX = float(np.finfo(np.float16).max)
BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default
TIMBRAL_FRAMES = 7
TIMBRAL_BANDS = (0.4, 0.7)  # fractions of the mel bands: 38 and 67 of 96
TEMPORAL_FRAMES = (128, 64, 32)
MIDEND_FRAMES = 7

MTT_LABELS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)
MSD_LABELS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock",
    "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy",
)
LABELS: dict[str, tuple[str, ...]] = {"MTT_musicnn": MTT_LABELS, "MSD_musicnn": MSD_LABELS}

# The layers musicnn's extractor exposes that genreflow can use as a clip's embedding.
FEATURES: tuple[str, ...] = ("max_pool", "mean_pool", "penultimate", "taggram")
# The default embedding, by measurement (bench/embedding_probe.py): a logistic regression on gtzan-mini's
# 10 s clips, 5 folds repeated over 5 seeds, C chosen on each fold's validation tracks, track accuracy:
# MSD_musicnn max_pool 0.916, MSD penultimate 0.890, MTT+MSD penultimate 0.890, MTT penultimate 0.820.
# The Million Song Dataset's tags include genres (rock, jazz, blues, Hip-Hop...); MagnaTagATune's are
# mostly instruments and moods.
CLIP_CHUNK = 16  # clips read, resampled and turned into patches at once (the network runs batch_size patches)
DEFAULT_MODEL = "MSD_musicnn"
# Since issue 22, the default embedding is max_pool and the tag scores side by side ("max_pool+taggram",
# 753 + 50 numbers a clip): a track-level logistic regression on them scored 0.920 +- 0.104 on the folds a
# rebuild draws over gtzan-mini (max_pool alone 0.900 +- 0.087), and 0.934 against 0.909 as the mean of 10 other
# draws of 5 folds, better on every draw (docs/model.md).
DEFAULT_FEATURE = "max_pool+taggram"
FEATURE_JOIN = "+"  # a feature of several layers: their names joined, their vectors side by side in this order


def feature_layers(feature: str) -> tuple[str, ...]:
    """The layers of an embedding feature: ``"max_pool+taggram"`` is ("max_pool", "taggram"), each in FEATURES."""
    parts = tuple(feature.split(FEATURE_JOIN))
    unknown = [part for part in parts if part not in FEATURES]
    if unknown or len(set(parts)) != len(parts):
        raise MusicnnError(f"unknown musicnn feature {feature!r}; choose one of {', '.join(FEATURES)}, or several "
                           f"joined by {FEATURE_JOIN!r}")
    return parts


class MusicnnError(GenreflowError, ValueError):
    """A checkpoint that does not fit the network, or audio the network cannot take."""


@dataclass(frozen=True)
class MusicnnArch:
    """The sizes of a musicnn network; the defaults are MTT_musicnn's and MSD_musicnn's.

    Tests build a tiny one with the same structure and checkpoint names.
    """

    n_mels: int = N_MELS
    n_classes: int = 50
    timbral_filters: int = 204  # int(1.6 * 128)
    temporal_filters: int = 51  # int(1.6 * 32)
    midend_filters: int = 64
    backend_units: int = 200
    temporal_frames: tuple[int, ...] = TEMPORAL_FRAMES

    @property
    def timbral_bands(self) -> tuple[int, ...]:
        return tuple(int(fraction * self.n_mels) for fraction in TIMBRAL_BANDS)

    @property
    def frontend_dims(self) -> int:
        return len(TIMBRAL_BANDS) * self.timbral_filters + len(self.temporal_frames) * self.temporal_filters

    @property
    def pool_dims(self) -> int:
        """Size of max_pool and mean_pool: front-end features plus the three mid-end layers."""
        return self.frontend_dims + 3 * self.midend_filters

    def feature_dims(self, feature: str) -> int:
        sizes = {"max_pool": self.pool_dims, "mean_pool": self.pool_dims, "penultimate": self.backend_units,
                 "taggram": self.n_classes}
        return sum(sizes[part] for part in feature_layers(feature))


# ---------------------------------------------------------------- audio front end


def resample_to_model_rate(y: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 audio at musicnn's 16 kHz, resampled as ``librosa.load(path, sr=16000)`` does.

    librosa's soxr HQ with its length rounding, so a file's spectrogram is
    musicnn's frame for frame (soxr alone can leave one sample fewer).
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise MusicnnError(f"expected mono audio of shape (samples,), got shape {y.shape}")
    if sr == SAMPLE_RATE:
        return y
    import librosa

    return librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq").astype(np.float32, copy=False)


def log_compressed_mel(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """musicnn's input: log-compressed mel power, ``log10(10000 x + 1)``, frames first.

    Not model/mel.py's log_mel: no dB, no peak reference, no floor; its own name
    keeps the two transforms apart.

    y : np.ndarray [shape=(samples,)], mono float audio at ``sr`` Hz (resampled to 16 kHz here)
    Returns np.ndarray [shape=(1 + samples_16k // 256, 96)], float32, finite.
    """
    import librosa

    y = resample_to_model_rate(y, sr)
    if not np.isfinite(y).all():
        raise MusicnnError("audio contains NaN or Inf")
    power = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
                                           n_mels=N_MELS, pad_mode="reflect").T
    # The float16 cast is musicnn's (its training data was stored so); clipping keeps an
    # impossible-for-|y|<=1 power above float16's range finite instead of inf.
    power16 = np.minimum(power, FLOAT16_MAX).astype(np.float16)
    return np.log10(LOG_SCALE * power16.astype(np.float32) + 1.0).astype(np.float32)


def patches(spec: np.ndarray, patch_frames: int = PATCH_FRAMES, hop_frames: int | None = None) -> np.ndarray:
    """Cut a (frames, bands) spectrogram into patches as musicnn's ``batch_data`` does.

    Patches start every ``hop_frames`` (default: back to back) and a trailing part
    shorter than a patch is dropped. A spectrogram shorter than one patch is
    repeated until it fills one (the "repeat-pad" musicnn was trained with).
    Returns np.ndarray [shape=(n_patches, patch_frames, bands)].
    """
    hop_frames = hop_frames or patch_frames
    if len(spec) == 0:
        raise MusicnnError("empty spectrogram: no audio")
    if len(spec) < patch_frames:
        spec = np.tile(spec, (int(np.ceil(patch_frames / len(spec))), 1))[:patch_frames]
    starts = range(0, len(spec) - patch_frames + 1, hop_frames)
    return np.stack([spec[start : start + patch_frames] for start in starts])


def clip_patches(clips: np.ndarray, sr: int) -> list[np.ndarray]:
    """musicnn's patches of each clip [shape=(patches, 187, 96)]: :func:`patches` of :func:`log_compressed_mel`.

    clips : np.ndarray [shape=(clips, samples)], mono audio at ``sr`` Hz; int16 PCM is scaled to [-1, 1].
    """
    if clips.dtype == np.int16:
        clips = clips.astype(np.float32) / 32768.0
    return [patches(log_compressed_mel(clip, sr)) for clip in clips]


# ---------------------------------------------------------------- the network

# Keras layer name -> TF1 checkpoint scope, in the order the TF1 graph created them.
CHECKPOINT_SCOPES: dict[str, str] = {
    "input_bn": "batch_normalization",
    "timbral_0_conv": "conv2d", "timbral_0_bn": "batch_normalization_1",
    "timbral_1_conv": "conv2d_1", "timbral_1_bn": "batch_normalization_2",
    "temporal_0_conv": "conv2d_2", "temporal_0_bn": "batch_normalization_3",
    "temporal_1_conv": "conv2d_3", "temporal_1_bn": "batch_normalization_4",
    "temporal_2_conv": "conv2d_4", "temporal_2_bn": "batch_normalization_5",
    "midend_0_conv": "conv2d_5", "midend_0_bn": "batch_normalization_6",
    "midend_1_conv": "conv2d_6", "midend_1_bn": "batch_normalization_7",
    "midend_2_conv": "conv2d_7", "midend_2_bn": "batch_normalization_8",
    "backend_pool_bn": "batch_normalization_9",
    "backend_dense": "dense", "penultimate": "batch_normalization_10",
    "logits": "dense_1",
}


def build_network(arch: MusicnnArch = MusicnnArch()) -> keras.Model:
    """musicnn's graph in Keras 3, inference only, for patches of any number of frames.

    Input: log-compressed mel patches [shape=(batch, frames, n_mels)]. Outputs a dict of
    "taggram" (sigmoid tag scores), "max_pool" and "mean_pool" (over time, of the
    front- and mid-end features), "penultimate" (the back-end's dense layer after
    batch norm), named as musicnn's extractor names them.
    """
    import keras
    from keras import layers

    def bn(name: str) -> layers.BatchNormalization:
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)

    mel = keras.Input((None, arch.n_mels), name="log_mel")
    x = bn("input_bn")(layers.Reshape((-1, arch.n_mels, 1), name="add_channel")(mel))

    # Front-end. Timbral: time padded by 3 each side then 'valid' (musicnn's cheap 'same' in time).
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="timbral_pad")(x)
    branches = []
    for i, bands in enumerate(arch.timbral_bands):
        h = layers.Conv2D(arch.timbral_filters, (TIMBRAL_FRAMES, bands), padding="valid", activation="relu",
                          name=f"timbral_{i}_conv")(padded)
        h = bn(f"timbral_{i}_bn")(h)
        h = layers.MaxPooling2D((1, arch.n_mels - bands + 1), name=f"timbral_{i}_pool")(h)
        branches.append(layers.Reshape((-1, arch.timbral_filters), name=f"timbral_{i}_squeeze")(h))
    for i, frames in enumerate(arch.temporal_frames):
        # Keras 'same' is TF's SAME (for an even kernel, one more zero after than before), as in TF1.
        h = layers.Conv2D(arch.temporal_filters, (frames, 1), padding="same", activation="relu",
                          name=f"temporal_{i}_conv")(x)
        h = bn(f"temporal_{i}_bn")(h)
        h = layers.MaxPooling2D((1, arch.n_mels), name=f"temporal_{i}_pool")(h)
        branches.append(layers.Reshape((-1, arch.temporal_filters), name=f"temporal_{i}_squeeze")(h))
    frontend = layers.Concatenate(name="frontend")(branches)

    # Mid-end: TF1's conv2d of kernel (7, all features) over a 1-channel map is a 1-d conv over time.
    midend = [frontend]
    h = frontend
    for i in range(3):
        conv = layers.Conv1D(arch.midend_filters, MIDEND_FRAMES, padding="valid", activation="relu",
                             name=f"midend_{i}_conv")(layers.ZeroPadding1D(3, name=f"midend_{i}_pad")(h))
        conv = bn(f"midend_{i}_bn")(conv)
        h = conv if i == 0 else layers.Add(name=f"midend_{i}_residual")([conv, h])
        midend.append(h)
    features = layers.Concatenate(name="midend")(midend)

    # Back-end: TF1 concatenated max and mean on a trailing axis, then flattened: interleaved.
    max_pool = layers.GlobalMaxPooling1D(name="max_pool")(features)
    mean_pool = layers.GlobalAveragePooling1D(name="mean_pool")(features)
    stacked = layers.Concatenate(name="pool_stack")([
        layers.Reshape((arch.pool_dims, 1), name="max_pool_column")(max_pool),
        layers.Reshape((arch.pool_dims, 1), name="mean_pool_column")(mean_pool),
    ])
    h = bn("backend_pool_bn")(layers.Flatten(name="pool_interleave")(stacked))
    h = layers.Dense(arch.backend_units, activation="relu", name="backend_dense")(h)
    penultimate = bn("penultimate")(h)
    logits = layers.Dense(arch.n_classes, name="logits")(penultimate)
    taggram = layers.Activation("sigmoid", name="taggram")(logits)
    return keras.Model(mel, {"taggram": taggram, "max_pool": max_pool, "mean_pool": mean_pool,
                             "penultimate": penultimate}, name="musicnn")


def load_checkpoint(network: keras.Model, prefix: str | Path) -> None:
    """Set every weight of ``network`` from the TF1 checkpoint at ``prefix`` (``tf.train.load_checkpoint``).

    Raises MusicnnError naming the variable when one is missing or has another shape.
    """
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (ValueError, tf.errors.OpError) as exc:
        raise MusicnnError(f"cannot read the checkpoint {prefix}: {exc}") from None
    shapes = reader.get_variable_to_shape_map()

    def read(name: str, shape: Sequence[int]) -> np.ndarray:
        if name not in shapes:
            raise MusicnnError(f"checkpoint {prefix} has no variable {name}: not a musicnn checkpoint "
                               "of this architecture")
        value = reader.get_tensor(name)
        # Only axes of length 1 may differ: Conv1D's (7, in, out) is TF1's (7, in, 1, out).
        if [d for d in value.shape if d != 1] != [d for d in shape if d != 1]:
            raise MusicnnError(f"checkpoint variable {name} has shape {list(value.shape)}, "
                               f"the network needs {list(shape)}")
        return value.reshape(shape)

    for layer_name, scope in CHECKPOINT_SCOPES.items():
        layer = network.get_layer(layer_name)
        if layer.__class__.__name__ == "BatchNormalization":
            names = ("gamma", "beta", "moving_mean", "moving_variance")
        else:
            names = ("kernel", "bias")
        layer.set_weights([read(f"{scope}/{n}", w.shape) for n, w in zip(names, layer.weights, strict=True)])


# ---------------------------------------------------------------- the embedder


@dataclass(frozen=True)
class ClipEmbeddings:
    """One row per clip: the chosen feature averaged over the clip's 3 s patches, and its tag scores."""

    vectors: np.ndarray  # [shape=(clips, dims)], float32
    tags: np.ndarray  # [shape=(clips, n_classes)], float32 in (0, 1)
    patches_per_clip: np.ndarray  # [shape=(clips,)], int


class MusicnnEmbedder:
    """A musicnn network with its weights loaded, turning audio into tag scores and embeddings.

    Build it once per process (a few seconds) and reuse it for every clip.
    """

    def __init__(self, checkpoint: str | Path, labels: Sequence[str],
                 arch: MusicnnArch | None = None, feature: str = DEFAULT_FEATURE, batch_size: int = 32) -> None:
        feature_layers(feature)  # raises MusicnnError for an unknown layer
        self.arch = arch or MusicnnArch(n_classes=len(labels))
        self.labels = tuple(labels)
        self.feature = feature
        self.batch_size = batch_size
        self.network = build_network(self.arch)
        load_checkpoint(self.network, checkpoint)
        self._forward = None

    @classmethod
    def from_cache(cls, model: str = DEFAULT_MODEL, weights_dir: str | Path | None = None,
                   feature: str = DEFAULT_FEATURE, fetch: bool = True) -> MusicnnEmbedder:
        """The embedder with ``model``'s weights from the cache, fetched there on first use (model/weights.py)."""
        from genreflow.model.weights import checkpoint_prefix

        if model not in LABELS:
            raise MusicnnError(f"unknown musicnn model {model!r}; choose one of {', '.join(LABELS)}")
        return cls(checkpoint_prefix(model, weights_dir, fetch=fetch), LABELS[model], feature=feature)

    @property
    def dims(self) -> int:
        return self.arch.feature_dims(self.feature)

    def feature_model(self) -> keras.Model:
        """The network from a patch to its embedding feature: one layer's output, or several side by side."""
        import keras
        from keras import layers

        outputs = [self.network.get_layer(part).output for part in feature_layers(self.feature)]
        output = outputs[0] if len(outputs) == 1 else layers.Concatenate(name="musicnn_feature_concat")(outputs)
        return keras.Model(self.network.input, output, name="musicnn_features")

    def features(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every exposed layer for log-compressed mel patches [shape=(patches, frames, n_mels)], one row per patch."""
        import tensorflow as tf

        if self._forward is None:
            network = self.network
            self._forward = tf.function(lambda x: network(x, training=False), reduce_retracing=True)
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 3 or batch.shape[2] != self.arch.n_mels:
            raise MusicnnError(f"expected patches of shape (n, frames, {self.arch.n_mels}), got {batch.shape}")
        parts = [self._forward(tf.constant(batch[i : i + self.batch_size]))
                 for i in range(0, len(batch), self.batch_size)]
        return {name: np.concatenate([p[name].numpy() for p in parts]) for name in FEATURES}

    def taggram(self, y: np.ndarray, sr: int) -> np.ndarray:
        """Tag scores of each back-to-back 3 s patch of ``y`` [shape=(patches, n_classes)], as musicnn's extractor."""
        return self.features(patches(log_compressed_mel(y, sr)))["taggram"]

    def top_tags(self, y: np.ndarray, sr: int, n: int = 3) -> list[tuple[str, float]]:
        """musicnn's ``top_tags``: the ``n`` tags of highest mean score over the patches, with the scores."""
        mean = self.taggram(y, sr).mean(axis=0)
        return [(self.labels[i], float(mean[i])) for i in np.argsort(mean)[::-1][:n]]

    def embed_clips(self, clips: np.ndarray, sr: int, chunk: int = CLIP_CHUNK) -> ClipEmbeddings:
        """One embedding per clip: the chosen feature of each 3 s patch, averaged over the clip's patches.

        clips : np.ndarray [shape=(clips, samples)], mono audio at ``sr`` Hz (int16 PCM is scaled
        to [-1, 1]), a memory-mapped shard as well: ``chunk`` clips are read and resampled at a time.
        A 10 s clip gives 3 patches; one shorter than 3 s is repeat-padded to one.
        """
        clips = np.atleast_2d(np.asarray(clips))
        if len(clips) == 0:
            empty = np.zeros((0, self.dims), np.float32)
            return ClipEmbeddings(empty, np.zeros((0, len(self.labels)), np.float32), np.zeros(0, int))
        parts = [self._embed_chunk(clips[start : start + chunk], sr) for start in range(0, len(clips), chunk)]
        return ClipEmbeddings(*(np.concatenate(arrays) for arrays in zip(
            *((p.vectors, p.tags, p.patches_per_clip) for p in parts), strict=True)))

    def _embed_chunk(self, clips: np.ndarray, sr: int) -> ClipEmbeddings:
        per_clip = clip_patches(clips, sr)
        counts = np.array([len(p) for p in per_clip])
        out = self.features(np.concatenate(per_clip))
        bounds = np.cumsum(counts)[:-1]
        feature = np.concatenate([out[part] for part in feature_layers(self.feature)], axis=1)
        vectors = np.stack([part.mean(axis=0) for part in np.split(feature, bounds)])
        tags = np.stack([part.mean(axis=0) for part in np.split(out["taggram"], bounds)])
        return ClipEmbeddings(vectors.astype(np.float32), tags.astype(np.float32), counts)

    def embed_audio(self, y: np.ndarray, sr: int) -> np.ndarray:
        """The embedding of one whole recording [shape=(dims,)]: the mean over all its 3 s patches."""
        return self.embed_clips(np.asarray(y)[None, :], sr).vectors[0]
