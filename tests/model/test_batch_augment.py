"""Batch augmentation in tf.data: masks and mixes that are right, and the same for the same (seed, epoch, batch)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from genreflow.model.batch_augment import FREQ_MASK_SHARE, FREQ_MASKS, TIME_MASK_SHARE, TIME_MASKS, BatchAugment

N_MELS, FRAMES, BATCH, CLASSES = 40, 100, 6, 3
FILL = np.linspace(-60.0, -20.0, N_MELS).astype(np.float32)


def batch(seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(1.0, 2.0, size=(BATCH, N_MELS, FRAMES, 1)).astype(np.float32)  # never a fill value
    y = np.eye(CLASSES, dtype=np.float32)[np.arange(BATCH) % CLASSES]
    return tf.constant(x), tf.constant(y)


def test_spec_augment_masks_whole_band_and_frame_ranges_with_the_band_mean() -> None:
    x, y = batch()
    out, labels = BatchAugment(seed=1, fill=FILL, spec_augment=True)(x, y, tf.constant(0, tf.int64),
                                                                      tf.constant(0, tf.int64))
    out = out.numpy()[..., 0]
    np.testing.assert_array_equal(labels.numpy(), y.numpy())
    masked = out != x.numpy()[..., 0]
    assert masked.any()
    # A masked cell holds its band's fill value; masks are whole rows (bands) or whole columns (frames).
    np.testing.assert_array_equal(out[masked], np.broadcast_to(FILL[None, :, None], out.shape)[masked])
    for clip in masked:
        bands, frames = clip.all(axis=1), clip.all(axis=0)
        assert np.array_equal(clip, bands[:, None] | frames[None, :])
        assert bands.sum() <= FREQ_MASKS * round(FREQ_MASK_SHARE * N_MELS)
        assert frames.sum() <= TIME_MASKS * round(TIME_MASK_SHARE * FRAMES)


def test_mixup_mixes_clips_and_labels_with_the_same_weight() -> None:
    x, y = batch()
    out, labels = BatchAugment(seed=1, fill=FILL, spec_augment=False, mixup=0.4)(
        x, y, tf.constant(2, tf.int64), tf.constant(5, tf.int64))
    labels = labels.numpy()
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    assert (labels >= 0).all() and not np.array_equal(labels, y.numpy())
    # Each mixed clip lies between two clips of the batch, in the proportion its label says.
    xs = x.numpy()
    for i in range(BATCH):
        candidates = [(j, lam) for j in range(BATCH) for lam in np.linspace(0, 1, 2001)
                      if np.allclose(lam * y.numpy()[i] + (1 - lam) * y.numpy()[j], labels[i], atol=1e-3)]
        assert any(np.allclose(out[i], lam * xs[i] + (1 - lam) * xs[j], atol=2e-3) for j, lam in candidates)


def test_same_seed_epoch_and_batch_give_the_same_draws() -> None:
    x, y = batch()
    augment = BatchAugment(seed=7, fill=FILL, spec_augment=True, mixup=0.2)

    def run(epoch: int, step: int) -> np.ndarray:
        return augment(x, y, tf.constant(epoch, tf.int64), tf.constant(step, tf.int64))[0].numpy()

    np.testing.assert_array_equal(run(3, 4), run(3, 4))
    assert not np.array_equal(run(3, 4), run(3, 5))
    assert not np.array_equal(run(3, 4), run(4, 4))
    other = BatchAugment(seed=8, fill=FILL, spec_augment=True, mixup=0.2)
    assert not np.array_equal(run(3, 4), other(x, y, tf.constant(3, tf.int64), tf.constant(4, tf.int64))[0].numpy())


def test_inactive_augment_passes_the_batch_through() -> None:
    x, y = batch()
    augment = BatchAugment(seed=0, fill=FILL, spec_augment=False, mixup=0.0)
    assert not augment.active
    out, labels = augment(x, y, tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    np.testing.assert_array_equal(out.numpy(), x.numpy())
    np.testing.assert_array_equal(labels.numpy(), y.numpy())


@pytest.mark.parametrize("spec_augment, mixup", [(True, 0.0), (False, 0.3)])
def test_clip_dataset_refuses_augmenting_unshuffled_or_integer_labels(tmp_path, spec_augment, mixup) -> None:
    import pandas as pd

    from genreflow.model.dataset import ClipSource, clip_dataset

    np.save(tmp_path / "a.npy", np.zeros((4, 8, 16), np.float16))
    index = pd.DataFrame({"row": np.arange(4), "genre": ["a", "b", "a", "b"]})
    source = ClipSource(tmp_path / "a.npy", index)
    augment = BatchAugment(seed=0, fill=np.zeros(8, np.float32), spec_augment=spec_augment, mixup=mixup)
    with pytest.raises(ValueError, match="needs the shuffled, one-hot training input"):
        clip_dataset([source], {"a": 0, "b": 1}, 2, shuffle=False, seed=0, one_hot=True, augment=augment)
    with pytest.raises(ValueError, match="needs the shuffled, one-hot training input"):
        clip_dataset([source], {"a": 0, "b": 1}, 2, shuffle=True, seed=0, one_hot=False, augment=augment)
    x, y = next(iter(clip_dataset([source], {"a": 0, "b": 1}, 2, shuffle=True, seed=0, one_hot=True,
                                  augment=augment)))
    assert tuple(x.shape) == (2, 8, 16, 1) and tuple(y.shape) == (2, 2) and y.dtype == tf.float32


def test_random_crop_takes_consecutive_frames_from_a_start_of_each_clips_own() -> None:
    x = tf.constant(np.broadcast_to(np.arange(FRAMES, dtype=np.float32)[None, None, :, None],
                                    (BATCH, N_MELS, FRAMES, 1)).copy())
    y = tf.constant(np.eye(CLASSES, dtype=np.float32)[np.arange(BATCH) % CLASSES])
    out, labels = BatchAugment(seed=2, fill=FILL, spec_augment=False, crop=30)(
        x, y, tf.constant(1, tf.int64), tf.constant(0, tf.int64))
    out = out.numpy()[..., 0]
    assert out.shape == (BATCH, N_MELS, 30)
    starts = out[:, 0, 0]
    np.testing.assert_array_equal(out, np.broadcast_to(starts[:, None, None] + np.arange(30), out.shape))
    assert starts.min() >= 0 and starts.max() <= FRAMES - 30 and len(set(starts)) > 1
    np.testing.assert_array_equal(labels.numpy(), y.numpy())
