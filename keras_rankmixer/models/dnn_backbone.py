"""`DNNBackbone`: the DNN (MLP) baseline on RankMixer's feature front-end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from keras_rankmixer.features import Feature
from keras_rankmixer.layers._checks import check_rate
from keras_rankmixer.models.backbone import (
    Backbone,
    concatenated_embeddings,
    feature_front_end,
    register_backbone,
)
from keras_rankmixer.models.ranker import check_units
from keras_rankmixer.types import DTypeLike


def mlp(
    x: keras.KerasTensor,
    units: Sequence[int],
    dropout: float,
    batch_norm: bool,
    prefix: str,
    dtype: DTypeLike,
) -> keras.KerasTensor:
    """`Dense -> [BatchNormalization] -> ReLU -> [Dropout]` per width; layers `{prefix}_dense_i`.

    Batch normalization uses momentum 0.9, PyTorch's default (the FuxiCTR/BARS baselines):
    Keras' 0.99 lags for the ~50 steps per epoch of small benchmarks.
    """
    for i, width in enumerate(units):
        x = keras.layers.Dense(width, dtype=dtype, name=f"{prefix}_dense_{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=0.9, dtype=dtype, name=f"{prefix}_bn_{i}")(
                x
            )
        x = keras.layers.Activation("relu", dtype=dtype, name=f"{prefix}_relu_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, dtype=dtype, name=f"{prefix}_dropout_{i}")(x)
    return x


@register_backbone("dnn")
class DNNBackbone(Backbone):
    """The DNN baseline: concatenated feature embeddings -> ReLU MLP.

    The same front-end as `RankMixerBackbone` (layers `embed_*`, `group_*`, then
    `embeddings`, the concatenation of all groups), so only the interaction part differs
    and comparisons are fair. MLP layers are `mlp_dense_i`, `mlp_bn_i`, `mlp_relu_i`,
    `mlp_dropout_i`.

    Args:
        features: Feature specs (the same ones RankMixer takes).
        hidden_units: Widths of the MLP (may be empty: the embeddings are the output).
        dropout: Dropout after each hidden layer.
        batch_norm: Batch normalization before each ReLU.
        embedding_l2: L2 penalty on every embedding table (0 = none).
        dtype: Dtype policy of all layers; None for the global one.
        name: Model name.
        **kwargs: `keras.Model` arguments.

    Output shape: `(batch, hidden_units[-1])` (the embedding width E if `hidden_units` is
    empty).

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=10, embedding_dim=4),
    ...          CategoricalFeature("item", vocabulary_size=20, embedding_dim=4)]
    >>> tuple(DNNBackbone(feats, hidden_units=(8, 6)).output.shape)
    (None, 6)
    """

    def __init__(
        self,
        features: Sequence[Feature | Mapping],
        hidden_units: Sequence[int] = (400, 400, 400),
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_l2: float = 0.0,
        dtype: DTypeLike = None,
        name: str = "dnn_backbone",
        **kwargs: Any,
    ) -> None:
        hidden_units = check_units("hidden_units", hidden_units)
        check_rate("dropout", dropout)
        features, inputs, groups = feature_front_end(features, dtype=dtype)
        x = concatenated_embeddings(groups, dtype=dtype)
        x = mlp(x, hidden_units, dropout, batch_norm, "mlp", dtype)
        own = {"hidden_units": hidden_units, "dropout": dropout, "batch_norm": batch_norm}
        super().__init__(
            inputs, x, features, own, embedding_l2=embedding_l2, dtype=dtype, name=name, **kwargs
        )
