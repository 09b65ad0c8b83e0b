"""bench.embed_speed: musicnn's FLOPs counted from its layers match a hand count, and every runtime it times
computes TensorFlow's embeddings (on the tiny musicnn)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from genreflow.bench import embed_speed
from genreflow.model.musicnn import MusicnnArch, MusicnnEmbedder, build_network
from tests.model.musicnn_tiny import TINY, save_tf1_checkpoint, tiny_variables


def _hand_count(arch: MusicnnArch, frames: int) -> int:
    """2 x multiply-adds, layer by layer, from musicnn's models.py sizes."""
    macs = sum(frames * (arch.n_mels - bands + 1) * arch.timbral_filters * 7 * bands for bands in arch.timbral_bands)
    macs += sum(frames * arch.n_mels * arch.temporal_filters * length for length in arch.temporal_frames)
    macs += frames * 7 * arch.frontend_dims * arch.midend_filters + 2 * frames * 7 * arch.midend_filters**2
    macs += 2 * arch.pool_dims * arch.backend_units + arch.backend_units * arch.n_classes
    return 2 * macs


@pytest.mark.parametrize(("arch", "frames"), [(TINY, 187), (MusicnnArch(), 187), (MusicnnArch(), 50)])
def test_network_flops_match_a_hand_count_of_musicnns_layers(arch: MusicnnArch, frames: int) -> None:
    flops = embed_speed.network_flops(build_network(arch), frames)
    assert len(flops) == 2 + len(arch.temporal_frames) + 3 + 2  # convolutions and dense layers, each once
    assert sum(flops.values()) == _hand_count(arch, frames)


def test_real_musicnn_costs_about_2_8_gflop_a_patch_mostly_in_its_timbral_filters() -> None:
    flops = embed_speed.network_flops(build_network(MusicnnArch()))
    total = sum(flops.values())
    assert 2.7e9 < total < 2.9e9
    assert (flops["timbral_0_conv"] + flops["timbral_1_conv"]) / total > 0.75


def test_measure_times_every_installed_runtime_and_each_computes_tensorflows_embeddings(tmp_path: Path) -> None:
    prefix = save_tf1_checkpoint(tiny_variables(TINY, seed=2), tmp_path / "variables")
    embedder = MusicnnEmbedder(prefix, [str(i) for i in range(TINY.n_classes)], arch=TINY)
    clips = embed_speed.synthetic_clips(2, seconds=4.0)
    result = embed_speed.measure(embedder, clips, embed_speed.SAMPLE_RATE, rounds=1)
    onnx = all(importlib.util.find_spec(module) for module in ("tf2onnx", "onnxruntime"))  # genreflow[export]
    assert list(result["network"]) == ["tensorflow", *(["onnxruntime"] if onnx else []), "tflite"]
    assert result["clips"] == 2 and result["patches"] == 2  # a 4 s clip holds one whole 3 s patch
    assert result["flops_per_patch"] == _hand_count(TINY, 187)
    for suffix in ("", "_cpu"):  # by wall time and by CPU time
        assert list(result[f"network{suffix}"]) == list(result["network"])
        for name, figures in result[f"network{suffix}"].items():
            assert figures["max_abs_diff_vs_tensorflow"] < 1e-4, name
            assert figures["ms_per_clip"] > 0 and figures["gflops"] > 0
            assert figures["fraction_of_peak"] == pytest.approx(figures["gflops"] / result[f"peak_gflops{suffix}"])
            per_clip = result["flops_per_patch"] * result["patches"] / result["clips"]
            assert figures["gflops"] == pytest.approx(per_clip / figures["ms_per_clip"] / 1e6)
        assert result[f"embed_ms_per_clip{suffix}"] > 0 and result[f"front_ms_per_clip{suffix}"] > 0
        assert np.isfinite(result[f"peak_gflops{suffix}"]) and result[f"peak_gflops{suffix}"] > 0
