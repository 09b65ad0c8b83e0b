"""Augmentation of training batches inside tf.data: random crops, SpecAugment masks and mixup.

Unlike the time-stretch and pitch-shift copies (model/augment_copies.py, which
the augment stage stores), these cost next to nothing, so they are drawn afresh
for every batch of every epoch instead of being stored. Every draw comes from
TensorFlow's stateless random ops seeded by (seed, epoch, batch), so a run
resumed after a kill sees the masks and mixes an uninterrupted run saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genreflow.model.quiet_tf import tf

# SpecAugment (Park et al. 2019), scaled to a clip: each mask covers up to this share of the bands
# or frames, and there are this many of each kind per clip.
FREQ_MASKS, FREQ_MASK_SHARE = 2, 0.1
TIME_MASKS, TIME_MASK_SHARE = 2, 0.1
STEP_STRIDE = 1 << 20  # batches reserved per epoch in the seed of a batch's draws
SALTS = 4
# Salts that keep the draws of the three random decisions apart.
FREQ_SALT, TIME_SALT, MIX_SALT, CROP_SALT = 1, 2, 3, 0


@dataclass(frozen=True)
class BatchAugment:
    """What to do to each training batch (x (b, n_mels, frames, 1) dB, y (b, n_classes) one-hot), in order:
    crop, mask, mix.

    ``fill`` [shape=(n_mels,)] is the value masked cells take: the training mean of
    each band, so that a mask reads as "nothing unusual" after the model's band
    normalisation. ``mixup`` is the alpha of the Beta(alpha, alpha) mixing weights;
    0 turns mixup off.
    """

    seed: int
    fill: np.ndarray
    spec_augment: bool = True
    mixup: float = 0.0
    crop: int = 0  # frames of the random crop each clip is cut to; 0: whole clips

    @property
    def active(self) -> bool:
        return self.spec_augment or self.mixup > 0 or self.crop > 0

    def _seed(self, epoch: tf.Tensor, step: tf.Tensor, salt: int) -> tf.Tensor:
        counter = tf.cast(epoch, tf.int64) * STEP_STRIDE + tf.cast(step, tf.int64)
        return tf.stack([tf.constant(self.seed % 2**31, tf.int64), counter * SALTS + salt])

    def __call__(self, x: tf.Tensor, y: tf.Tensor, epoch: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.crop:
            x = self._crop(x, epoch, step)
        if self.spec_augment:
            x = self._mask(x, epoch, step)
        if self.mixup > 0:
            x, y = self._mix(x, y, epoch, step)
        return x, y

    def _crop(self, x: tf.Tensor, epoch: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """``crop`` consecutive frames of each clip, from a random start of its own."""
        batch, frames = tf.shape(x)[0], tf.shape(x)[2]
        width = tf.minimum(self.crop, frames)
        draw = tf.random.stateless_uniform([batch], self._seed(epoch, step, CROP_SALT))
        start = tf.cast(tf.floor(draw * tf.cast(frames - width + 1, tf.float32)), tf.int32)
        columns = start[:, None] + tf.range(width)[None, :]
        return tf.gather(x, columns, axis=2, batch_dims=1)

    def _mask(self, x: tf.Tensor, epoch: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """Set up to FREQ_MASKS band ranges and TIME_MASKS frame ranges of each clip to the band mean."""
        batch, n_mels, frames = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        bands = _spans(batch, n_mels, FREQ_MASKS, FREQ_MASK_SHARE, self._seed(epoch, step, FREQ_SALT))
        times = _spans(batch, frames, TIME_MASKS, TIME_MASK_SHARE, self._seed(epoch, step, TIME_SALT))
        masked = bands[:, :, None] | times[:, None, :]
        fill = tf.constant(self.fill, dtype=x.dtype)[None, :, None, None]
        return tf.where(masked[..., None], fill, x)

    def _mix(self, x: tf.Tensor, y: tf.Tensor, epoch: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Each clip mixed with another of the batch: lam * a + (1 - lam) * b, labels alike."""
        batch = tf.shape(x)[0]
        seeds = tf.random.experimental.stateless_split(self._seed(epoch, step, MIX_SALT), 3)
        alpha = tf.constant(self.mixup, tf.float32)
        g1 = tf.random.stateless_gamma([batch], seeds[0], alpha)
        g2 = tf.random.stateless_gamma([batch], seeds[1], alpha)
        lam = g1 / tf.maximum(g1 + g2, 1e-12)
        partner = tf.argsort(tf.random.stateless_uniform([batch], seeds[2]))
        mixed_x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * tf.gather(x, partner)
        mixed_y = lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, partner)
        return mixed_x, mixed_y


def _spans(batch: tf.Tensor, length: tf.Tensor, count: int, share: float, seed: tf.Tensor) -> tf.Tensor:
    """(batch, length) bool: ``count`` random spans per row, each of 0..share*length cells."""
    widest = tf.maximum(tf.cast(tf.round(share * tf.cast(length, tf.float32)), tf.int32), 1)
    draws = tf.random.stateless_uniform([2, batch, count], seed)
    width = tf.cast(tf.floor(draws[0] * tf.cast(widest + 1, tf.float32)), tf.int32)
    start = tf.cast(tf.floor(draws[1] * tf.cast(tf.maximum(length - width, 0) + 1, tf.float32)), tf.int32)
    cells = tf.range(length)[None, None, :]
    inside = (cells >= start[..., None]) & (cells < (start + width)[..., None])
    return tf.reduce_any(inside, axis=1)
