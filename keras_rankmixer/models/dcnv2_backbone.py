"""`DCNv2Backbone`: DCN-V2 (keras-rs `FeatureCross`) on RankMixer's feature front-end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_rs

from keras_rankmixer.features import Feature
from keras_rankmixer.layers._checks import check_rate
from keras_rankmixer.models.backbone import (
    Backbone,
    concatenated_embeddings,
    feature_front_end,
    register_backbone,
)
from keras_rankmixer.models.dnn_backbone import mlp
from keras_rankmixer.models.ranker import check_units
from keras_rankmixer.types import DTypeLike

#: How the cross stack and the MLP are combined.
STRUCTURES = ("parallel", "stacked")


@register_backbone("dcnv2")
class DCNv2Backbone(Backbone):
    """DCN-V2: a stack of `keras_rs.layers.FeatureCross` layers beside (or before) an MLP.

    Each cross layer (`cross_i`) computes `x_{l+1} = x_0 * (W x_l + b) + x_l` (full-rank
    `W`, or low-rank `U V` with `projection_dim`), where `x_0` is the concatenated
    embeddings (layer `embeddings`, the same front-end as `RankMixerBackbone`). With
    `structure="parallel"` the cross stack and the MLP (`mlp_dense_i`, ...) both read the
    embeddings and their outputs are concatenated (layer `cross_and_deep`); with
    `"stacked"` the MLP reads the cross stack's output.

    Args:
        features: Feature specs (the same ones RankMixer takes).
        num_cross_layers: Number of cross layers.
        projection_dim: Low-rank size of each cross layer's `W`; None for full rank.
        hidden_units: Widths of the MLP (may be empty: cross network only).
        structure: `"parallel"` or `"stacked"`.
        dropout: Dropout after each MLP hidden layer.
        batch_norm: Batch normalization in the MLP.
        embedding_l2: L2 penalty on every embedding table (0 = none).
        dtype: Dtype policy of all layers; None for the global one.
        name: Model name.
        **kwargs: `keras.Model` arguments.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> feats = [CategoricalFeature("user", vocabulary_size=10, embedding_dim=4),
    ...          CategoricalFeature("item", vocabulary_size=20, embedding_dim=4)]
    >>> backbone = DCNv2Backbone(feats, num_cross_layers=2, hidden_units=(8,))
    >>> tuple(backbone.output.shape)  # cross (8) | deep (8)
    (None, 16)

    References:
        Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for
        Web-scale Learning to Rank Systems", WWW 2021, arXiv:2008.13535.
    """

    def __init__(
        self,
        features: Sequence[Feature | Mapping],
        num_cross_layers: int = 3,
        projection_dim: int | None = None,
        hidden_units: Sequence[int] = (400, 400, 400),
        structure: str = "parallel",
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_l2: float = 0.0,
        dtype: DTypeLike = None,
        name: str = "dcnv2_backbone",
        **kwargs: Any,
    ) -> None:
        hidden_units = check_units("hidden_units", hidden_units)
        check_rate("dropout", dropout)
        if (
            not isinstance(num_cross_layers, int)
            or isinstance(num_cross_layers, bool)
            or num_cross_layers < 1
        ):
            raise ValueError(
                "`num_cross_layers` must be a positive int, got "
                f"num_cross_layers={num_cross_layers!r}."
            )
        if structure not in STRUCTURES:
            raise ValueError(f"`structure` must be 'parallel' or 'stacked', got {structure!r}.")
        if projection_dim is not None and (
            not isinstance(projection_dim, int) or projection_dim < 1
        ):
            raise ValueError(
                "`projection_dim` must be None or a positive int, got "
                f"projection_dim={projection_dim!r}."
            )
        features, inputs, groups = feature_front_end(features, dtype=dtype)
        x0 = concatenated_embeddings(groups, dtype=dtype)
        cross = x0
        for i in range(num_cross_layers):
            cross = keras_rs.layers.FeatureCross(
                projection_dim=projection_dim, dtype=dtype, name=f"cross_{i}"
            )(x0, cross)
        if structure == "stacked":
            out = mlp(cross, hidden_units, dropout, batch_norm, "mlp", dtype)
        else:
            deep = mlp(x0, hidden_units, dropout, batch_norm, "mlp", dtype)
            out = (
                keras.layers.Concatenate(dtype=dtype, name="cross_and_deep")([cross, deep])
                if hidden_units
                else cross
            )
        own = {
            "num_cross_layers": num_cross_layers,
            "projection_dim": projection_dim,
            "hidden_units": hidden_units,
            "structure": structure,
            "dropout": dropout,
            "batch_norm": batch_norm,
        }
        super().__init__(
            inputs, out, features, own, embedding_l2=embedding_l2, dtype=dtype, name=name, **kwargs
        )
