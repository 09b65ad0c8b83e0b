"""The seed project's CNN, with the per-band normalisation built into the model.

Putting the training set's band statistics inside the model (a built-in
``Normalization`` layer, no ``Lambda``) means a saved ``.keras`` file is all a
predictor needs: it loads with ``safe_mode=True`` and takes raw log-mel dB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genreflow.model.quiet_tf import keras

# The seed's input: 128 mel bands x 431 frames (10 s at 22,050 Hz, hop 512), one channel.
SEED_INPUT_SHAPE: tuple[int, int, int] = (128, 431, 1)
# Filters of the three conv blocks; the first uses "valid" padding, the others "same".
CONV_FILTERS: tuple[int, ...] = (24, 48, 48)
CONV_KERNEL: tuple[int, int] = (5, 5)
POOL_SIZE: tuple[int, int] = (2, 2)
DENSE_UNITS = 64
DROPOUT_RATE = 0.5
# A band whose training std is below this (dB) is treated as constant: dividing
# by a near-zero std would blow up any test-time deviation.
MIN_BAND_STD_DB = 0.1
# Batch-norm moving averages follow the batch statistics this fast. Keras's
# 0.99 needs hundreds of steps to settle; a small set gives a handful of steps
# per epoch, so with 0.99 the model validated and saved early would use
# moving statistics that are still far from the data's.
BN_MOMENTUM = 0.9
# Axis of the mel bands in a (batch, n_mels, frames, channel) input.
BAND_AXIS = 1


def _conv_block(x: keras.KerasTensor, filters: int, padding: str, name: str, seed: int | None,
                batch_norm: bool) -> keras.KerasTensor:
    """Conv -> (batch norm) -> average pool -> ReLU, in the seed's order (pooling before the activation)."""
    x = keras.layers.Conv2D(
        filters,
        CONV_KERNEL,
        padding=padding,
        use_bias=not batch_norm,  # the norm's offset replaces the bias
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = keras.layers.AveragePooling2D(POOL_SIZE, name=f"{name}_pool")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _time_pooled(x: keras.KerasTensor) -> keras.KerasTensor:
    """(batch, bands, frames, channels) -> the mean and the max over frames of each (band, channel).

    Built from stock layers (no Lambda), so the model still loads in safe mode;
    the frame count may be None, so one model takes clips of any length.
    """
    _, bands, _, channels = x.shape
    x = keras.layers.Permute((2, 1, 3), name="frames_first")(x)
    x = keras.layers.Reshape((-1, bands * channels), name="frame_features")(x)
    mean = keras.layers.GlobalAveragePooling1D(name="time_mean")(x)
    peak = keras.layers.GlobalMaxPooling1D(name="time_max")(x)
    return keras.layers.Concatenate(name="time_pool")([mean, peak])


def _band_stats(
    n_mels: int, band_mean: np.ndarray | None, band_std: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per band; identity (0, 1) where no statistics are given."""
    mean = np.zeros(n_mels) if band_mean is None else np.asarray(band_mean, dtype=np.float64)
    std = np.ones(n_mels) if band_std is None else np.asarray(band_std, dtype=np.float64)
    if mean.shape != (n_mels,) or std.shape != (n_mels,):
        raise ValueError(f"band statistics must have shape ({n_mels},), got mean {mean.shape} and std {std.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise ValueError("band statistics contain NaN or infinite values")
    std = np.maximum(std, MIN_BAND_STD_DB)
    return mean, std**2


def build_cnn(
    n_classes: int,
    input_shape: Sequence[int | None] = SEED_INPUT_SHAPE,
    band_mean: np.ndarray | None = None,
    band_std: np.ndarray | None = None,
    seed: int | None = None,
    batch_norm: bool = False,
    time_pooling: bool = False,
) -> keras.Model:
    """The seed's CNN on log-mel input of ``input_shape`` = (n_mels, frames, 1), with optional changes.

    The input is float32 (float16 shards are cast by the input pipeline and by
    Keras on entry); the first layer normalises each mel band with the training
    ``band_mean``/``band_std`` (dB). ``seed`` fixes the initial weights and the
    dropout masks of this model. ``batch_norm`` adds batch normalisation after
    each convolution; ``time_pooling`` replaces the Flatten by the mean and max
    over time, which takes far fewer weights (93 k instead of 2.4 M in the
    dense layer) and any number of frames (the model's frames are then None).
    With neither, this is the seed's model exactly.
    """
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    shape = tuple(None if d is None else int(d) for d in input_shape)
    if len(shape) != 3 or shape[2] != 1 or shape[0] is None:
        raise ValueError(f"input_shape must be (n_mels, frames, 1), got {shape}")
    if time_pooling:
        shape = (shape[0], None, 1)
    elif shape[1] is None:
        raise ValueError("a model without time pooling needs a fixed number of frames")
    mean, variance = _band_stats(shape[0], band_mean, band_std)

    def sub_seed(offset: int) -> int | None:
        return None if seed is None else seed + offset

    inputs = keras.Input(shape=shape, dtype="float32", name="log_mel")
    x = keras.layers.Normalization(axis=BAND_AXIS, mean=mean, variance=variance, name="band_norm")(inputs)
    for i, filters in enumerate(CONV_FILTERS):
        padding = "valid" if i == 0 else "same"
        x = _conv_block(x, filters, padding, name=f"block{i + 1}", seed=sub_seed(i), batch_norm=batch_norm)
    x = _time_pooled(x) if time_pooling else keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(DROPOUT_RATE, seed=sub_seed(10), name="dropout1")(x)
    x = keras.layers.Dense(
        DENSE_UNITS,
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=sub_seed(20)),
        name="dense",
    )(x)
    x = keras.layers.Dropout(DROPOUT_RATE, seed=sub_seed(11), name="dropout2")(x)
    outputs = keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=sub_seed(21)),
        name="genre",
    )(x)
    name = "seed_cnn" if not (batch_norm or time_pooling) else "genreflow_cnn"
    return keras.Model(inputs, outputs, name=name)


def build_seed_cnn(
    n_classes: int,
    input_shape: Sequence[int] = SEED_INPUT_SHAPE,
    band_mean: np.ndarray | None = None,
    band_std: np.ndarray | None = None,
    seed: int | None = None,
) -> keras.Model:
    """The seed's CNN exactly (see :func:`build_cnn`)."""
    return build_cnn(n_classes, input_shape, band_mean, band_std, seed)


def compile_model(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    label_smoothing: float = 0.0,
    one_hot: bool = False,
) -> keras.Model:
    """Adam + cross-entropy, as in the seed: on integer labels, or on label vectors with ``one_hot``.

    Label vectors are for mixup and label smoothing, which change them; on
    integer labels the loss and accuracy are the seed's sparse ones.
    """
    if one_hot:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    elif label_smoothing:
        raise ValueError("label smoothing needs one-hot labels")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=loss, metrics=[accuracy])
    return model


def cnn_representation_model(model: keras.Model) -> keras.Model:
    """A CNN's clips to (its last hidden layer, its probabilities): the softmax layer's input and output, in one
    pass. The representation a file's novelty is measured on (model/open_set.py)."""
    return keras.Model(model.inputs, [model.layers[-1].input, model.output])
