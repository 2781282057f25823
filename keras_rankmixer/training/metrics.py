"""Exact ranking metrics: rank-based AUC, logloss, and both per task of a model on a split.

Keras' `AUC` metric is a 200-threshold approximation; these are exact (Mann-Whitney U with
average ranks for ties) and computed in float64 over the whole split, so run directories,
early stopping (`callbacks.ExactAUC`) and `rankmixer evaluate` report the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np


def roc_auc(labels: Any, scores: Any) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); NaN if one class is absent.

    Example:

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype="float64").reshape(-1)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype="float64")
    # average ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def logloss(labels: Any, probs: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to `[eps, 1 - eps]` (as Keras does).

    Example:

    >>> round(logloss([1, 0], [0.9, 0.2]), 4)
    0.1643
    """
    y = np.asarray(labels, dtype="float64").reshape(-1)
    p = np.clip(np.asarray(probs, dtype="float64").reshape(-1), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def predict_with_labels(model: keras.Model, data, batch_size: int = 8192, progress: bool = False):
    """`(labels dict, predictions dict)` of flat numpy arrays, for arrays or a dataset.

    Args:
        model: A model whose outputs are a dict `{task: probability}` (or one tensor).
        data: `(features, labels)` (dicts of arrays) or a `tf.data.Dataset` of such pairs.
        batch_size: Batch size for arrays.
        progress: Show a `tqdm` bar of the rows scored (datasets only).
    """
    if isinstance(data, tuple | list):
        features, labels = data
        preds = model.predict(features, batch_size=batch_size, verbose=0)
        labels = {k: np.asarray(v).reshape(-1) for k, v in labels.items()}
    else:
        from tqdm import tqdm

        parts_l: dict[str, list] = {}
        parts_p: dict[str, list] = {}
        with tqdm(desc="evaluate", unit=" rows", disable=not progress) as bar:
            for x, y in data:
                p = model.predict_on_batch(x)
                if not isinstance(p, Mapping):
                    p = {next(iter(y)): p}
                for k in y:
                    parts_l.setdefault(k, []).append(np.asarray(y[k]).reshape(-1))
                    if k in p:
                        parts_p.setdefault(k, []).append(np.asarray(p[k]).reshape(-1))
                bar.update(int(next(iter(y.values())).shape[0]))
        labels = {k: np.concatenate(v) for k, v in parts_l.items()}
        preds = {k: np.concatenate(v) for k, v in parts_p.items()}
    if not isinstance(preds, Mapping):
        preds = {next(iter(labels)): preds}
    preds = {k: np.asarray(v).reshape(-1) for k, v in preds.items()}
    missing = sorted(set(labels) - set(preds))
    if missing:
        raise ValueError(f"labels {missing} have no model output; outputs: {sorted(preds)}.")
    return labels, {k: preds[k] for k in labels}


def evaluate_exact(
    model: keras.Model, data, batch_size: int = 8192, progress: bool = False
) -> dict[str, float]:
    """Exact AUC and logloss per task of `model` on `data` (see `predict_with_labels`).

    Returns `{"auc": ..., "logloss": ...}` for one task, `{"<task>_auc": ..., ...}` for several.

    Example:

    >>> import numpy as np
    >>> from keras_rankmixer.features import CategoricalFeature
    >>> from keras_rankmixer.models import build_rankmixer
    >>> model = build_rankmixer([CategoricalFeature("a", vocabulary_size=4)], 2, 4, 1)
    >>> x, y = {"a": np.array([0, 1, 2, 3])}, {"click": np.array([0, 1, 0, 1])}
    >>> sorted(evaluate_exact(model, (x, y)))
    ['auc', 'logloss']
    """
    labels, preds = predict_with_labels(model, data, batch_size, progress)
    out = {}
    for task in labels:
        prefix = "" if len(labels) == 1 else f"{task}_"
        out[f"{prefix}auc"] = roc_auc(labels[task], preds[task])
        out[f"{prefix}logloss"] = logloss(labels[task], preds[task])
    return out
