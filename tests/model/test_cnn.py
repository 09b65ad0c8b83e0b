"""The seed CNN: exact layer shapes and parameter count, and a model file that loads safely."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from model.cnn import SEED_INPUT_SHAPE, build_seed_cnn, compile_model

# The seed's layer output shapes on 128 x 431 input (batch axis left out).
SEED_SHAPES = {
    "band_norm": (128, 431, 1),
    "block1_conv": (124, 427, 24),
    "block1_pool": (62, 213, 24),
    "block2_conv": (62, 213, 48),
    "block2_pool": (31, 106, 48),
    "block3_conv": (31, 106, 48),
    "block3_pool": (15, 53, 48),
    "flatten": (38160,),
    "dense": (64,),
    "genre": (8,),
}
SEED_PARAMS = {
    "block1_conv": 624,
    "block2_conv": 28_848,
    "block3_conv": 57_648,
    "dense": 2_442_304,
    "genre": 520,
}


@pytest.fixture(scope="module")
def seed_model() -> keras.Model:
    return build_seed_cnn(8, band_mean=np.full(128, -40.0), band_std=np.full(128, 12.0), seed=0)


def test_layer_output_shapes(seed_model: keras.Model) -> None:
    for name, shape in SEED_SHAPES.items():
        assert tuple(seed_model.get_layer(name).output.shape[1:]) == shape, name


def test_parameter_count(seed_model: keras.Model) -> None:
    for name, count in SEED_PARAMS.items():
        assert seed_model.get_layer(name).count_params() == count, name
    trainable = sum(int(np.prod(w.shape)) for w in seed_model.trainable_weights)
    assert trainable == 2_529_944
    # The band statistics are constants of the normalisation layer, not weights.
    assert seed_model.non_trainable_weights == []


def test_normalisation_uses_band_stats() -> None:
    mean, std = np.linspace(-60, -20, 16), np.linspace(5, 20, 16)
    model = build_seed_cnn(3, input_shape=(16, 32, 1), band_mean=mean, band_std=std, seed=0)
    probe = keras.Model(model.input, model.get_layer("band_norm").output)
    x = (mean + 2 * std)[None, :, None, None] * np.ones((1, 16, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(probe.predict_on_batch(x), 2.0, rtol=1e-5)


def test_float16_input_is_accepted() -> None:
    model = build_seed_cnn(3, input_shape=(16, 32, 1), seed=0)
    x = (np.random.default_rng(0).random((4, 16, 32, 1)) * -80).astype(np.float16)
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, model.predict_on_batch(x.astype(np.float32)), rtol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_save_and_safe_load_give_same_predictions(tmp_path: Path) -> None:
    model = build_seed_cnn(4, input_shape=(16, 32, 1), band_mean=np.full(16, -30.0), band_std=np.full(16, 8.0), seed=1)
    x = np.random.default_rng(1).uniform(-80, 0, (5, 16, 32, 1)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)


def test_seed_fixes_initial_weights() -> None:
    a = build_seed_cnn(3, input_shape=(16, 32, 1), seed=7).get_weights()
    b = build_seed_cnn(3, input_shape=(16, 32, 1), seed=7).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_classes": 1}, "at least 2 classes"),
        ({"n_classes": 3, "input_shape": (16, 32)}, "input_shape"),
        ({"n_classes": 3, "band_mean": np.zeros(5)}, "band statistics"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_seed_cnn(**kwargs)


def test_compile_uses_adam_and_sparse_labels() -> None:
    model = build_seed_cnn(3, input_shape=(16, 32, 1), seed=0)
    compile_model(model, 5e-4)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert SEED_INPUT_SHAPE == (128, 431, 1)
