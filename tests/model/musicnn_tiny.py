"""A tiny musicnn for tests: TF1 checkpoint variables under musicnn's names, and the graph in plain numpy.

The checkpoint is written with TF's SaveV2 op, the op TF1's Saver used, so it
is name-based exactly like the wheel's. ``reference_forward`` follows the
wheel's models.py line by line in NHWC (pads, 'valid'/'SAME' convolutions,
transposes, TF1's flatten of [max, mean]), independently of Keras, so a
mismatch in layer order, padding, pooling or batch norm shows up as a difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from genreflow.model.musicnn import MusicnnArch

TINY = MusicnnArch(n_mels=96, n_classes=6, timbral_filters=3, temporal_filters=2, midend_filters=4,
                   backend_units=5, temporal_frames=(16, 8, 4))
EPS = 1e-3


def tiny_variables(arch: MusicnnArch = TINY, seed: int = 0) -> dict[str, np.ndarray]:
    """Random values for every variable musicnn's TF1 graph creates, under its names, in its shapes."""
    rng = np.random.default_rng(seed)
    v: dict[str, np.ndarray] = {}

    def bn(scope: str, n: int) -> None:
        v[f"{scope}/gamma"] = rng.uniform(0.5, 1.5, n)
        v[f"{scope}/beta"] = rng.normal(0, 0.1, n)
        v[f"{scope}/moving_mean"] = rng.normal(0, 0.5, n)
        v[f"{scope}/moving_variance"] = rng.uniform(0.5, 2.0, n)

    def layer(scope: str, shape: tuple[int, ...]) -> None:
        v[f"{scope}/kernel"] = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        v[f"{scope}/bias"] = rng.normal(0, 0.1, shape[-1])

    bands = arch.timbral_bands
    bn("batch_normalization", 1)
    layer("conv2d", (7, bands[0], 1, arch.timbral_filters))
    bn("batch_normalization_1", arch.timbral_filters)
    layer("conv2d_1", (7, bands[1], 1, arch.timbral_filters))
    bn("batch_normalization_2", arch.timbral_filters)
    for i, frames in enumerate(arch.temporal_frames):
        layer(f"conv2d_{2 + i}", (frames, 1, 1, arch.temporal_filters))
        bn(f"batch_normalization_{3 + i}", arch.temporal_filters)
    layer("conv2d_5", (7, arch.frontend_dims, 1, arch.midend_filters))
    bn("batch_normalization_6", arch.midend_filters)
    layer("conv2d_6", (7, arch.midend_filters, 1, arch.midend_filters))
    bn("batch_normalization_7", arch.midend_filters)
    layer("conv2d_7", (7, arch.midend_filters, 1, arch.midend_filters))
    bn("batch_normalization_8", arch.midend_filters)
    bn("batch_normalization_9", 2 * arch.pool_dims)
    layer("dense", (2 * arch.pool_dims, arch.backend_units))
    bn("batch_normalization_10", arch.backend_units)
    layer("dense_1", (arch.backend_units, arch.n_classes))
    v["beta1_power"] = np.array(0.9)  # an optimizer leftover, as in the real checkpoint: ignored
    return {name: value.astype(np.float32) for name, value in v.items()}


def save_tf1_checkpoint(variables: dict[str, np.ndarray], prefix: Path) -> Path:
    """Write a name-based TF checkpoint (prefix.index + prefix.data-00000-of-00001), as TF1's Saver did."""
    import tensorflow as tf

    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n]) for n in names])
    return prefix


def _bn(x: np.ndarray, v: dict[str, np.ndarray], scope: str) -> np.ndarray:
    return ((x - v[f"{scope}/moving_mean"]) / np.sqrt(v[f"{scope}/moving_variance"] + EPS) * v[f"{scope}/gamma"]
            + v[f"{scope}/beta"])


def _conv_valid(x: np.ndarray, v: dict[str, np.ndarray], scope: str) -> np.ndarray:
    """tf.nn.conv2d VALID, NHWC input, (kh, kw, in, out) kernel, then bias and ReLU."""
    kernel = v[f"{scope}/kernel"].astype(np.float64)
    windows = sliding_window_view(x, kernel.shape[:2], axis=(1, 2))  # (b, h', w', c, kh, kw)
    return np.maximum(np.einsum("bhwcij,ijco->bhwo", windows, kernel) + v[f"{scope}/bias"], 0.0)


def _pad_time(x: np.ndarray, before: int, after: int) -> np.ndarray:
    return np.pad(x, [(0, 0), (before, after), (0, 0), (0, 0)])


def reference_forward(v: dict[str, np.ndarray], batch: np.ndarray) -> dict[str, np.ndarray]:
    """musicnn's build_musicnn at inference (is_training=False), float64 numpy, for batch (b, frames, bands)."""
    v = {name: value.astype(np.float64) for name, value in v.items()}
    x = _bn(batch.astype(np.float64)[..., None], v, "batch_normalization")
    pad7 = _pad_time(x, 3, 3)
    front = [_bn(_conv_valid(pad7, v, scope), v, bn).max(axis=2)
             for scope, bn in (("conv2d", "batch_normalization_1"), ("conv2d_1", "batch_normalization_2"))]
    for i in range(3):
        kernel_frames = v[f"conv2d_{2 + i}/kernel"].shape[0]
        before = (kernel_frames - 1) // 2  # TF's SAME: the odd zero goes after
        padded = _pad_time(x, before, kernel_frames - 1 - before)
        front.append(_bn(_conv_valid(padded, v, f"conv2d_{2 + i}"), v, f"batch_normalization_{3 + i}").max(axis=2))
    frontend = np.concatenate(front, axis=2)[..., None]  # (b, t, features, 1)

    c1 = _bn(_conv_valid(_pad_time(frontend, 3, 3), v, "conv2d_5"), v, "batch_normalization_6")
    c1_t = c1.transpose(0, 1, 3, 2)
    c2 = _bn(_conv_valid(_pad_time(c1_t, 3, 3), v, "conv2d_6"), v, "batch_normalization_7").transpose(0, 1, 3, 2)
    res2 = c2 + c1_t
    c3 = _bn(_conv_valid(_pad_time(res2, 3, 3), v, "conv2d_7"), v, "batch_normalization_8").transpose(0, 1, 3, 2)
    res3 = c3 + res2
    midend = np.concatenate([frontend, c1_t, res2, res3], axis=2)

    max_pool, mean_pool = midend.max(axis=1), midend.mean(axis=1)  # (b, features, 1)
    flat = np.concatenate([max_pool, mean_pool], axis=2).reshape(len(batch), -1)
    h = _bn(flat, v, "batch_normalization_9")
    dense = np.maximum(h @ v["dense/kernel"] + v["dense/bias"], 0.0)
    penultimate = _bn(dense, v, "batch_normalization_10")
    logits = penultimate @ v["dense_1/kernel"] + v["dense_1/bias"]
    return {"taggram": 1 / (1 + np.exp(-logits)), "max_pool": max_pool[..., 0], "mean_pool": mean_pool[..., 0],
            "penultimate": penultimate}


def stand_in_weights_cache(weights_dir: Path, seed: int = 0) -> Path:
    """A cache laid out as `genreflow weights fetch musicnn` leaves it, holding random full-size checkpoints.

    The real network's names and shapes, none of its knowledge: for tests of the
    embedding family's plumbing where the real weights may be absent.
    """
    import hashlib
    import json

    from genreflow.model.weights import CHECKPOINT_PREFIX, MANIFEST, MUSICNN

    folder = weights_dir / MUSICNN.folder
    files = {}
    for number, model in enumerate(MUSICNN.models):
        (folder / model).mkdir(parents=True, exist_ok=True)
        variables = tiny_variables(MusicnnArch(n_classes=50), seed + number)
        save_tf1_checkpoint(variables, folder / model / CHECKPOINT_PREFIX)
        for path in sorted((folder / model).iterdir()):
            files[f"{model}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {"source": MUSICNN.requirement, "wheel": "stand-in", "wheel_sha256": MUSICNN.sha256,
                "models": list(MUSICNN.models), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return weights_dir
