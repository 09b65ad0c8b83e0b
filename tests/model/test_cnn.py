"""The seed CNN: exact layer shapes and parameter count, and a model file that loads safely."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from genreflow.model.cnn import SEED_INPUT_SHAPE, build_seed_cnn, compile_model

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


def recipe_model(recipe: str, n_classes: int = 8) -> keras.Model:
    from genreflow.flows.config import build_config
    from genreflow.model.cnn import build_cnn

    knobs = build_config(None, recipe=recipe).train.knobs()
    return build_cnn(n_classes, band_mean=np.full(128, -40.0), band_std=np.full(128, 12.0), seed=0,
                     batch_norm=knobs["batch_norm"], time_pooling=knobs["time_pooling"])


def test_seed_recipe_builds_the_seed_model() -> None:
    model = recipe_model("seed")
    assert model.name == "seed_cnn" and model.input_shape == (None, *SEED_INPUT_SHAPE)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 2_529_944
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_genreflow_recipe_builds_batch_norm_and_pooling_over_time() -> None:
    model = recipe_model("genreflow")
    assert model.name == "genreflow_cnn"
    assert model.input_shape == (None, 128, None, 1), "any number of frames"
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)] == [
        "block1_bn", "block2_bn", "block3_bn"]
    assert model.get_layer("time_pool").output.shape[1:] == (15 * 48 * 2,)  # mean and max per band and channel
    assert model.get_layer("dense").count_params() == 1440 * 64 + 64
    for frames in (431, 130):  # a 10 s clip and a 3 s one
        x = np.random.default_rng(0).normal(-40, 10, (2, 128, frames, 1)).astype(np.float32)
        probs = model.predict_on_batch(x)
        assert probs.shape == (2, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_genreflow_model_loads_in_safe_mode(tmp_path: Path) -> None:
    model = recipe_model("genreflow", n_classes=3)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    x = np.zeros((1, 128, 431, 1), np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6)
