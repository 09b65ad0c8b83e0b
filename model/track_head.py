"""Track-level heads on pooled clip embeddings: pooling, three head kinds as plain arrays, inner CV, calibration.

Why (issue 22): a head trained clip by clip and tuned on a few dozen
validation tracks is noisy where one track moves accuracy by 2.5 points. Here
a track is one vector (its clips' embeddings pooled), the head's kind and
hyperparameters are chosen by K-fold cross-validation over the training
tracks only (grouped by artist where known), and a temperature fitted on
those out-of-fold predictions calibrates its probabilities.

Plain numpy and scikit-learn, no Prefect and no paths: bench/head_study.py
measures with these functions and model/embedding.py ships them. A fitted
:class:`TrackHead` is arrays and numbers only (no pickle), and
:func:`head_probabilities_layer` rebuilds it from Keras's built-in layers, so
a model holding it loads in safe mode and exports with nothing registered:
an RBF SVM is a layer computing the kernel against its stored support vectors,
then its dual coefficients and intercepts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from genreflow.storage.errors import GenreflowError

if TYPE_CHECKING:
    import keras

POOLINGS: tuple[str, ...] = ("mean", "mean+max")
HEAD_KINDS: tuple[str, ...] = ("logistic", "svm", "mlp")
# Hyperparameters tried by the inner cross-validation, per kind; the first wins ties. An SVM's gamma is
# gamma_scale / dims (sklearn's "scale" for standardised inputs, times the factor).
GRIDS: dict[str, tuple[dict[str, float], ...]] = {
    "logistic": tuple({"C": c} for c in (0.1, 0.01, 1.0)),  # the clip-level head's grid (model/embedding.py)
    "svm": tuple({"C": c, "gamma_scale": g} for c in (10.0, 1.0, 100.0) for g in (1.0, 0.5, 2.0)),
    "mlp": tuple({"hidden": 64, "alpha": a} for a in (1.0, 10.0)),
}
INNER_FOLDS = 4
ECE_BINS = 10
MAX_ITER = 3000
MLP_MAX_ITER = 300  # lbfgs iterations of the MLP: each costs a forward and backward pass, and 300 fit these sets
# The logit of a genre that an inner fold's training part lacks: it can never win, and one such track's
# log-loss stays finite for the temperature fit.
MISSING_LOGIT = -30.0
LOG_TEMPERATURE_BOUNDS = (-4.0, 4.0)  # temperatures between 0.018 and 55
NORM_EPSILON = 1e-3  # the Keras standardisation's batch-norm epsilon; its moving variance is 1 - epsilon


class TrackHeadError(GenreflowError, ValueError):
    """Tracks a head cannot be fitted on, or a head kind, pooling or grid genreflow does not know."""


# ---------------------------------------------------------------- pooling


def pool_clips(x: np.ndarray, groups: np.ndarray, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """One vector per track from its clips' embeddings.

    x : np.ndarray [shape=(clips, dims)]; groups : np.ndarray [shape=(clips,)], each clip's track.
    Returns (tracks sorted, np.ndarray [shape=(tracks, dims)] for "mean", (tracks, 2 dims) for
    "mean+max": the mean over a track's clips, then the max).
    """
    if pooling not in POOLINGS:
        raise TrackHeadError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    x = np.asarray(x, np.float64)
    groups = np.asarray(groups)
    if x.ndim != 2 or len(x) != len(groups):
        raise TrackHeadError(f"expected clips (n, dims) and n groups, got {x.shape} and {groups.shape}")
    keys, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(keys), x.shape[1]))
    np.add.at(sums, inverse, x)
    pooled = sums / np.bincount(inverse, minlength=len(keys))[:, None]
    if pooling == "mean+max":
        largest = np.full_like(pooled, -np.inf)
        np.maximum.at(largest, inverse, x)
        pooled = np.hstack([pooled, largest])
    return keys, pooled


# ---------------------------------------------------------------- probabilities and calibration


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` [shape=(n, classes)], float64."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-probability of each row's label under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(z)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the log-loss of ``softmax(logits / T)`` on held-out predictions.

    One number, so it cannot change which genre wins, only how sure the head says it is.
    """
    from scipy.optimize import minimize_scalar

    if len(logits) == 0:
        return 1.0
    result = minimize_scalar(lambda t: log_loss(logits, labels, float(np.exp(t))), bounds=LOG_TEMPERATURE_BOUNDS,
                             method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: over ``bins`` equal-width bins of the top probability, |accuracy - confidence| weighted by size.

    probs : np.ndarray [shape=(n, classes)]; labels : np.ndarray [shape=(n,)], class indices.
    """
    table = reliability_table(probs, labels, bins)
    total = sum(row["count"] for row in table)
    if total == 0:
        return 0.0
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table) / total)


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin (lo, hi]: count, mean top probability and accuracy; the reliability diagram's data."""
    probs = np.asarray(probs, np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else 0.0,
                     "accuracy": float(correct[mask].mean()) if mask.any() else 0.0})
    return rows


# ---------------------------------------------------------------- the heads, as arrays


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the columns of ``x``; a constant column keeps scale 1, as sklearn's StandardScaler."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


def _full_logits(present: np.ndarray, part: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns of the classes a fit saw put in place among ``n_classes``; the others at MISSING_LOGIT."""
    out = np.full((len(part), n_classes), MISSING_LOGIT)
    out[:, present] = part
    return out


def _fit_logistic(z: np.ndarray, y: np.ndarray, n_classes: int, params: Mapping[str, float], seed: int
                  ) -> dict[str, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs' convergence warning at the largest C
        model = LogisticRegression(C=params["C"], max_iter=MAX_ITER, random_state=seed).fit(z, y)
    present = model.classes_.astype(int)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # sklearn's binary form: one logit, for the second class
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    full_coef = np.zeros((n_classes, z.shape[1]))
    full_coef[present] = coef
    full_intercept = np.full(n_classes, MISSING_LOGIT)
    full_intercept[present] = intercept
    return {"coef": full_coef, "intercept": full_intercept}


def rbf_kernel(z: np.ndarray, support: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma ||z_i - s_j||^2) [shape=(len(z), len(support))], by the expansion the Keras layers use."""
    sq = (z * z).sum(axis=1)[:, None] - 2.0 * z @ support.T + (support * support).sum(axis=1)[None, :]
    return np.exp(-gamma * np.maximum(sq, 0.0))


def _fit_svm(z: np.ndarray, y: np.ndarray, n_classes: int, params: Mapping[str, float], seed: int
             ) -> dict[str, np.ndarray]:
    """One-vs-rest RBF SVMs (one binary SVC a genre) sharing one set of support vectors.

    Each genre's decision value, ``K(z, support) @ dual[:, g] + intercept[g]``, is its logit; the
    union of the binary machines' support vectors is stored once, with a zero coefficient where a
    vector does not support that genre's machine.
    """
    from sklearn.svm import SVC

    gamma = params["gamma_scale"] / z.shape[1]
    gram = rbf_kernel(z, z, gamma)
    machines: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    for g in range(n_classes):
        target = (y == g).astype(int)
        if 0 < target.sum() < len(target):
            svc = SVC(C=params["C"], kernel="precomputed", random_state=seed).fit(gram, target)
            machines[g] = (svc.support_, svc.dual_coef_[0], float(svc.intercept_[0]))
    used = np.unique(np.concatenate([s for s, _, _ in machines.values()])) if machines else np.zeros(0, int)
    dual = np.zeros((len(used), n_classes))
    intercept = np.full(n_classes, MISSING_LOGIT)
    for g, (support, coef, b) in machines.items():
        dual[np.searchsorted(used, support), g] = coef
        intercept[g] = b
    # A genre that is every training track (one-class fit): always wins.
    intercept[[g for g in range(n_classes) if g not in machines and (y == g).all()]] = -MISSING_LOGIT
    return {"support": z[used], "dual": dual, "intercept": intercept, "gamma": np.array(gamma)}


def _fit_mlp(z: np.ndarray, y: np.ndarray, n_classes: int, params: Mapping[str, float], seed: int
             ) -> dict[str, np.ndarray]:
    """One hidden ReLU layer, L2 ``alpha``, lbfgs: deterministic and fast on a few hundred tracks."""
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier((int(params["hidden"]),), alpha=params["alpha"], solver="lbfgs", max_iter=MLP_MAX_ITER,
                              random_state=seed).fit(z, y)
    present = model.classes_.astype(int)
    w2, b2 = model.coefs_[1], model.intercepts_[1]
    if len(present) == 2:  # one logistic unit: softmax([0, o]) is its sigmoid
        w2, b2 = np.hstack([np.zeros_like(w2), w2]), np.array([0.0, b2[0]])
    full_w2 = np.zeros((w2.shape[0], n_classes))
    full_w2[:, present] = w2
    full_b2 = np.full(n_classes, MISSING_LOGIT)
    full_b2[present] = b2
    return {"w1": model.coefs_[0], "b1": model.intercepts_[0], "w2": full_w2, "b2": full_b2}


def kind_logits(kind: str, weights: Mapping[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """A head's logits [shape=(n, classes)] of standardised track vectors ``z``, from its arrays alone."""
    if kind == "logistic":
        return z @ weights["coef"].T + weights["intercept"]
    if kind == "svm":
        if len(weights["support"]) == 0:
            return np.tile(weights["intercept"], (len(z), 1))
        return rbf_kernel(z, weights["support"], float(weights["gamma"])) @ weights["dual"] + weights["intercept"]
    if kind == "mlp":
        return np.maximum(z @ weights["w1"] + weights["b1"], 0.0) @ weights["w2"] + weights["b2"]
    raise TrackHeadError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")


FITTERS: dict[str, Callable[..., dict[str, np.ndarray]]] = {"logistic": _fit_logistic, "svm": _fit_svm,
                                                           "mlp": _fit_mlp}


@dataclass(frozen=True)
class TrackHead:
    """A fitted track-level head: standardise, the kind's logits, divide by the temperature, softmax.

    ``weights`` are the kind's arrays (see :func:`kind_logits`); ``cv`` what the inner
    cross-validation measured and chose, for the model's summary and the report.
    """

    kind: str
    genres: tuple[str, ...]
    pooling: str
    params: Mapping[str, float]
    mean: np.ndarray
    scale: np.ndarray
    weights: Mapping[str, np.ndarray]
    temperature: float = 1.0
    cv: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return len(self.mean)

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        """Uncalibrated logits [shape=(tracks, genres)] of pooled track vectors [shape=(tracks, dims)]."""
        z = (np.asarray(pooled, np.float64) - self.mean) / self.scale
        return kind_logits(self.kind, self.weights, z)

    def probabilities(self, pooled: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Genre probabilities [shape=(tracks, genres)], float64; ``calibrated`` divides by the temperature."""
        return softmax(self.logits(pooled), self.temperature if calibrated else 1.0)


def fit_arrays(kind: str, x: np.ndarray, y: np.ndarray, n_classes: int, params: Mapping[str, float],
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(mean, scale, weights) of one head of ``kind`` fitted on tracks ``x`` with class indices ``y``.

    The standardisation is fitted here too, so that inside a cross-validation it sees only the part it trains on.
    """
    if kind not in FITTERS:
        raise TrackHeadError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    x = np.asarray(x, np.float64)
    mean, scale = _standardise(x)
    return mean, scale, FITTERS[kind]((x - mean) / scale, np.asarray(y), n_classes, params, seed)


# ---------------------------------------------------------------- inner cross-validation


def inner_folds(labels: np.ndarray, groups: np.ndarray, k: int = INNER_FOLDS, seed: int = 0
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) positions of ``k`` stratified parts of the given tracks, an artist's tracks in one part.

    Positions index the arrays passed in, which are the training tracks only: nothing else can leak in.
    Fewer parts where there are fewer groups, or where the largest genre has fewer tracks (a demo set's
    train split); none (``[]``) under two.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = np.asarray(labels), np.asarray(groups)
    k = min(k, len(np.unique(groups)), int(np.unique(labels, return_counts=True)[1].max(initial=0)))
    if k < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [(fit, held) for fit, held in splitter.split(np.zeros(len(labels)), labels, groups)]


@dataclass(frozen=True)
class Candidate:
    """One (kind, hyperparameters) as the inner cross-validation saw it."""

    kind: str
    params: Mapping[str, float]
    accuracy: float  # out-of-fold track accuracy
    log_loss: float  # out-of-fold log-loss after its own temperature
    temperature: float
    oof_logits: np.ndarray


def cross_validate_candidate(kind: str, params: Mapping[str, float], x: np.ndarray, y: np.ndarray, n_classes: int,
                             splits: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> Candidate:
    """Out-of-fold logits of one candidate over ``splits``, its accuracy, and the temperature they call for."""
    oof = np.zeros((len(x), n_classes))
    for fit, held in splits:
        mean, scale, weights = fit_arrays(kind, x[fit], y[fit], n_classes, params, seed)
        oof[held] = kind_logits(kind, weights, (x[held] - mean) / scale)
    temperature = fit_temperature(oof, y)
    return Candidate(kind, dict(params), float((oof.argmax(axis=1) == y).mean()), log_loss(oof, y, temperature),
                     temperature, oof)


def fit_track_head(x: np.ndarray, labels: Sequence[str], genres: Sequence[str], groups: Sequence[Any] | None = None,
                   kinds: Sequence[str] = ("svm",), pooling: str = "mean", folds: int = INNER_FOLDS, seed: int = 0,
                   grids: Mapping[str, Sequence[Mapping[str, float]]] | None = None) -> TrackHead:
    """Choose a head among ``kinds`` and their grids by ``folds``-fold CV over these training tracks, fit it on all.

    x : np.ndarray [shape=(tracks, dims)], pooled track vectors (:func:`pool_clips`) of the training
    tracks only; labels their genres; groups their artists (or anything that must not be split;
    default: each track its own). The best candidate has the highest out-of-fold accuracy, ties
    going to the lower calibrated log-loss, then to the earlier kind and grid entry; its
    out-of-fold temperature calibrates the final head. Raises TrackHeadError when a genre has
    no training track.
    """
    genres = [str(g) for g in genres]
    labels = np.asarray([str(g) for g in labels])
    x = np.asarray(x, np.float64)
    if len(x) == 0 or len(x) != len(labels):
        raise TrackHeadError(f"need one label per training track, got {len(x)} tracks and {len(labels)} labels")
    missing = sorted(set(genres) - set(labels.tolist()))
    if missing:
        raise TrackHeadError(f"no training tracks of genre(s) {missing}: the head cannot learn them")
    unknown = sorted(set(labels.tolist()) - set(genres))
    if unknown:
        raise TrackHeadError(f"training tracks of genre(s) {unknown} that are not among {genres}")
    grids = {**GRIDS, **(grids or {})}
    for kind in kinds:
        if kind not in FITTERS:
            raise TrackHeadError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    y = np.array([genres.index(g) for g in labels])
    keys = np.arange(len(x)) if groups is None else np.asarray(
        [f"track:{i}" if g is None or g != g or str(g).strip() == "" else f"group:{g}"
         for i, g in enumerate(groups)], dtype=object)
    splits = inner_folds(y, keys, folds, seed)
    # One BLAS thread: on matrices this small a second thread costs more than it gives (on 2 busy cores,
    # OpenBLAS's waiting threads made an MLP's fit 20 times slower).
    with threadpool_limits(limits=1):
        candidates = [cross_validate_candidate(kind, params, x, y, len(genres), splits, seed)
                      for kind in kinds for params in grids[kind]] if splits else []
    if candidates:
        best = min(candidates, key=lambda c: (-c.accuracy, c.log_loss))
        kind, params, temperature = best.kind, best.params, best.temperature
    else:  # too few tracks to cross-validate: the first kind's first grid entry, uncalibrated
        best, kind, params, temperature = None, kinds[0], grids[kinds[0]][0], 1.0
    with threadpool_limits(limits=1):
        mean, scale, weights = fit_arrays(kind, x, y, len(genres), params, seed)
    cv = {"folds": len(splits), "tracks": len(x),
          "inner_accuracy": best.accuracy if best else None, "inner_log_loss": best.log_loss if best else None,
          "candidates": [{"kind": c.kind, **c.params, "accuracy": c.accuracy, "log_loss": c.log_loss,
                          "temperature": c.temperature} for c in candidates]}
    return TrackHead(kind, tuple(genres), pooling, dict(params), mean, scale, weights, temperature, cv)


# ---------------------------------------------------------------- Keras


def head_probabilities_layer(head: TrackHead, pooled: keras.KerasTensor, prefix: str = "head",
                             output_name: str = "genre_probabilities") -> keras.KerasTensor:
    """The head on a pooled-embedding tensor [shape=(batch, dims)], from built-in layers only.

    Standardisation (``{prefix}_norm``), the kind's logits (an SVM: the RBF kernel against the support vectors as
    ``exp(2g z.s - g|s|^2 - g|z|^2)``, then the dual coefficients and intercepts), the temperature
    (``{prefix}_temperature``, a Rescaling by 1/T: the uncalibrated logits are its input) and the softmax.
    """
    from keras import layers

    def dense(units: int, kernel: np.ndarray, bias: np.ndarray | None, name: str,
              activation: str | None = None) -> layers.Dense:
        layer = layers.Dense(units, activation=activation, use_bias=bias is not None, name=name, trainable=False)
        layer.build((None, kernel.shape[0]))
        layer.set_weights([kernel.astype(np.float32)] + ([bias.astype(np.float32)] if bias is not None else []))
        return layer

    # The standardisation as an inference-mode batch norm: (x - mean) / 1 * (1 / scale), held in variables. A
    # Normalization layer's constants became extra graph inputs when tf2onnx converted a function of the model.
    norm = layers.BatchNormalization(epsilon=NORM_EPSILON, name=f"{prefix}_norm", trainable=False)
    norm.build((None, head.dims))
    norm.set_weights([(1.0 / head.scale).astype(np.float32), np.zeros(head.dims, np.float32),
                      head.mean.astype(np.float32), np.full(head.dims, 1.0 - NORM_EPSILON, np.float32)])
    z = norm(pooled)
    w = head.weights
    g = len(head.genres)
    if head.kind == "logistic":
        logits = dense(g, w["coef"].T, w["intercept"], f"{prefix}_logistic")(z)
    elif head.kind == "svm":
        support, gamma = np.asarray(w["support"], np.float64), float(w["gamma"])
        n = max(len(support), 1)
        if len(support) == 0:  # no machine had support vectors: the intercepts alone
            support, dual = np.zeros((1, head.dims)), np.zeros((1, g))
        else:
            dual = w["dual"]
        cross = dense(n, 2.0 * gamma * support.T, -gamma * (support * support).sum(axis=1), f"{prefix}_svm_cross")(z)
        norm = dense(n, np.full((head.dims, n), gamma), None, f"{prefix}_svm_norm")(layers.Multiply(
            name=f"{prefix}_svm_square")([z, z]))
        kernel = layers.Activation("exponential", name=f"{prefix}_svm_kernel")(
            layers.Subtract(name=f"{prefix}_svm_distance")([cross, norm]))
        logits = dense(g, dual, w["intercept"], f"{prefix}_svm_decision")(kernel)
    elif head.kind == "mlp":
        hidden = dense(w["w1"].shape[1], w["w1"], w["b1"], f"{prefix}_mlp_hidden", activation="relu")(z)
        logits = dense(g, w["w2"], w["b2"], f"{prefix}_mlp_logits")(hidden)
    else:
        raise TrackHeadError(f"unknown head kind {head.kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    scaled = layers.Rescaling(1.0 / head.temperature, name=f"{prefix}_temperature")(logits)
    return layers.Activation("softmax", name=output_name)(scaled)


def build_head_model(head: TrackHead) -> keras.Model:
    """Pooled track vectors [shape=(batch, dims)] to calibrated genre probabilities, as one Keras model."""
    import keras

    pooled = keras.Input((head.dims,), name="track_embedding")
    return keras.Model(pooled, head_probabilities_layer(head, pooled), name=f"track_head_{head.kind}")


def describe(head: TrackHead) -> dict[str, Any]:
    """What the fit chose, JSON-ready, for the model's summary and the report."""
    extra = {"support_vectors": len(head.weights["support"])} if head.kind == "svm" else {}
    return {"head": head.kind, "pooling": head.pooling, **{k: float(v) for k, v in head.params.items()},
            "temperature": head.temperature, "dims": head.dims, **extra,
            "inner_folds": head.cv.get("folds"), "inner_accuracy": head.cv.get("inner_accuracy"),
            "inner_log_loss": head.cv.get("inner_log_loss")}
