"""Parameter types of the plain audio and model libraries, defined low so that every layer shares them.

flows/config.py composes them, with the sections only flows need, into the one
configuration that the CLI and config files map onto.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genreflow.storage.errors import GenreflowError

Recipe = Literal["genreflow", "seed"]
# Which model families a rebuild trains: "best" trains every family it can (the CNN, and the embedding model
# where musicnn's weights are in the cache) and promotes the best on the validation split; "cnn" or
# "embedding" trains that one alone ("embedding" fetches the weights on first use).
ModelChoice = Literal["best", "cnn", "embedding"]
# TrainConfig fields that say which families train and from which weights: none of them changes the CNN.
MODEL_FAMILY_FIELDS: tuple[str, ...] = ("family", "embedding_model", "embedding_feature", "weights_dir")
EmbeddingModel = Literal["MSD_musicnn", "MTT_musicnn"]
EmbeddingFeature = Literal["max_pool+taggram", "max_pool", "mean_pool", "penultimate",
                           "max_pool+penultimate+taggram"]
# Where the time-stretch and pitch-shift copies are made: "spectral" derives them from one STFT of the
# clip (resampled along time or frequency, folded into the mel projection); "waveform" is librosa's
# phase vocoder and resampler on the audio, then a fresh mel, as the seed did (docs/model.md compares).
AugmentDomain = Literal["spectral", "waveform"]
AUGMENT_DOMAINS: tuple[str, ...] = ("spectral", "waveform")
MIN_STRETCH_RATE, MAX_STRETCH_RATE = 0.25, 4.0
MAX_PITCH_STEPS = 24.0

# What each recipe sets where the configuration leaves a field unset (docs/model.md measures them).
# "seed" is the seed project exactly: its CNN, its four augmentations, the first 10 s of each track.
RECIPE_KNOBS: tuple[str, ...] = ("batch_norm", "time_pooling", "spec_augment", "mixup", "label_smoothing",
                                 "lr_schedule", "class_weights", "crop_seconds")
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {"batch_norm": False, "time_pooling": False, "spec_augment": False, "mixup": 0.0,
             "label_smoothing": 0.0, "lr_schedule": "constant", "class_weights": False, "crop_seconds": 0.0,
             "clips_per_track": 1, "time_stretch": [0.8, 0.9], "pitch_shift": [2.0, -2.0],
             "augment_domain": "waveform"},
    "genreflow": {"batch_norm": True, "time_pooling": True, "spec_augment": True, "mixup": 0.0,
                  "label_smoothing": 0.0, "lr_schedule": "constant", "class_weights": False,
                  "crop_seconds": 5.0, "clips_per_track": None, "time_stretch": [0.8, 0.9], "pitch_shift": [2.0, -2.0],
                  "augment_domain": "spectral"},
}

# Genres a prediction lists per file, and genres the evaluation's top-k accuracy counts (the seed
# reported top-2: neighbouring genres such as rock and punk are often confused).
PREDICT_TOP_K = 3
ACCURACY_TOP_K = 2


class AugmentError(GenreflowError, ValueError):
    """A time-stretch rate, pitch shift or augmentation domain that cannot be used."""


def check_stretch_rate(rate: float) -> float:
    """``rate`` if it is a usable time-stretch rate (0.25..4; below 1 is slower), else AugmentError."""
    if not (math.isfinite(rate) and MIN_STRETCH_RATE <= rate <= MAX_STRETCH_RATE):
        raise AugmentError(f"time-stretch rate {rate} is outside {MIN_STRETCH_RATE:g}..{MAX_STRETCH_RATE:g} "
                           "(1 = unchanged, 0.8 = 20 % slower)")
    return float(rate)


def check_pitch_steps(steps: float) -> float:
    """``steps`` if it is a usable pitch shift (non-zero, within +-24 semitones), else AugmentError."""
    if not (math.isfinite(steps) and steps != 0 and abs(steps) <= MAX_PITCH_STEPS):
        raise AugmentError(f"pitch shift {steps} must be non-zero and within +-{MAX_PITCH_STEPS:g} semitones")
    return float(steps)


def check_domain(domain: str) -> str:
    """``domain`` if it is spectral or waveform, else AugmentError."""
    if domain not in AUGMENT_DOMAINS:
        raise AugmentError(f"augmentation domain {domain!r} is not one of {', '.join(AUGMENT_DOMAINS)}")
    return domain


class Section(BaseModel):
    """A configuration section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AudioConfig(Section):
    """Decoding and log-mel parameters (the seed's: 128 x 431 for 10 s at 22,050 Hz)."""

    sample_rate: int = Field(22050, ge=4000, le=192_000, description="decoding sample rate, Hz")
    clip_seconds: float = Field(10.0, gt=0, le=120, description="clip length, seconds")
    clips_per_track: int | None = Field(
        None, ge=1, json_schema_extra={"none_word": "all"},
        description="clips taken per track: N, or all = windows covering the whole track (back to back; the last "
                    "one ends with the track, so it may overlap the one before) (default: set by --recipe: "
                    "all, or 1 for --recipe seed)"
    )
    n_mels: int = Field(128, ge=8, le=512, description="mel bands")
    n_fft: int = Field(2048, ge=64, description="FFT size, samples")
    hop_length: int = Field(512, ge=16, description="hop between frames, samples")

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def frames(self) -> int:
        """Frames per clip as librosa's centred STFT makes them (431 for the seed)."""
        return 1 + self.clip_samples // self.hop_length


class AugmentConfig(Section):
    """Augmented copies of training clips (the seed's set), and where they are made.

    ``augment_domain`` left unset takes the recipe's (RECIPES): spectral for the
    default, waveform for ``seed``, which stays the seed's exact recipe.
    """

    time_stretch: list[float] = Field(
        default_factory=lambda: [0.8, 0.9], description="time-stretch rates"
    )
    pitch_shift: list[float] = Field(
        default_factory=lambda: [2.0, -2.0], description="pitch shifts, semitones"
    )

    augment_domain: AugmentDomain | None = Field(
        None, description="spectral (from one STFT per clip, fast) or waveform (librosa on the audio, the "
        "seed's); none = the recipe's"
    )

    @field_validator("time_stretch")
    @classmethod
    def _positive_rates(cls, rates: list[float]) -> list[float]:
        return [check_stretch_rate(rate) for rate in rates]

    @field_validator("pitch_shift")
    @classmethod
    def _sane_shifts(cls, steps: list[float]) -> list[float]:
        return [check_pitch_steps(step) for step in steps]

    @property
    def domain(self) -> str:
        """The domain the copies are made in: as set, else the default recipe's."""
        return self.augment_domain or RECIPES["genreflow"]["augment_domain"]

    def names(self) -> list[str]:
        """Augmentation names as stored in the mel index: stretch0.8, pitch+2, ..."""
        return [f"stretch{r:g}" for r in self.time_stretch] + [
            f"pitch{s:+g}" for s in self.pitch_shift
        ]


class TrainConfig(Section):
    """Training hyper-parameters (the seed's: Adam, batch 64, up to 100 epochs) and the model recipe.

    The recipe knobs (batch_norm ... class_weights) left unset take the value of
    ``recipe`` (RECIPES); set one to try a variant of a recipe.
    """

    recipe: Recipe = Field("genreflow", description="genreflow (better on real music) or seed (the seed's exact one)")
    epochs: int = Field(100, ge=1, le=10_000, description="maximum epochs (at most 6 on --source demo unless given)")
    batch_size: int = Field(64, ge=1, le=4096, description="batch size")
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="Adam learning rate")
    patience: int = Field(10, ge=1, description="early-stopping patience, epochs")
    seed: int = Field(42, description="seed for weights and shuffling")
    shuffle_buffer: int = Field(2048, ge=1, description="tf.data shuffle buffer, clips")
    batch_norm: bool | None = Field(None, description="batch normalisation after each convolution")
    time_pooling: bool | None = Field(None, description="mean+max over time instead of Flatten: any clip length")
    spec_augment: bool | None = Field(None, description="SpecAugment time and frequency masks on training clips")
    mixup: float | None = Field(None, ge=0, le=10, description="mixup Beta(a, a) of training batches; 0 = off")
    label_smoothing: float | None = Field(None, ge=0, lt=1, description="label smoothing of the loss")
    lr_schedule: Literal["constant", "cosine"] | None = Field(None, description="learning-rate schedule")
    class_weights: bool | None = Field(None, description="weight the loss by inverse genre frequency")
    crop_seconds: float | None = Field(None, ge=0, le=120, description="train on random crops this long "
                                       "(needs time pooling; 0 = whole clips); evaluation takes whole clips")
    folds: int | None = Field(None, ge=2, le=20, json_schema_extra={"none_word": "off"},
                              description="`genreflow evaluate`: K-fold cross-validation over all tracks instead of "
                                          "the test split, or off")
    baseline: bool = Field(True, description="also train and report the MFCC + SVM baseline")
    family: ModelChoice = Field("best", description="model family: best (every family available, the best on "
                                "validation promoted), cnn, or embedding (pretrained musicnn embeddings + a head)")
    embedding_model: EmbeddingModel = Field("MSD_musicnn", description="musicnn weights the embedding model uses")
    embedding_feature: EmbeddingFeature = Field("max_pool+taggram", description="musicnn layer(s) used as a clip's "
                                                 "embedding, side by side where joined by +")
    weights_dir: str | None = Field(None, description="pretrained weights cache (default: the user's cache, or "
                                    "$GENREFLOW_WEIGHTS_DIR)")

    def knobs(self) -> dict[str, Any]:
        """The recipe knobs with the recipe's values filled in where unset."""
        preset = RECIPES[self.recipe]
        return {name: preset[name] if getattr(self, name) is None else getattr(self, name) for name in RECIPE_KNOBS}
