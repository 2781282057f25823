"""Parameter and FLOP counts for RankMixer models and configs (Eq. 12).

FLOPs are forward matmul FLOPs per sample, 2 per multiply-add; element-wise work (GELU,
LayerNorm, token mixing's reshapes) is not counted, as in the paper. "Dense" parameters are
all weights except embedding tables (the sparse part).
"""

from __future__ import annotations

import math

import keras

from keras_rankmixer.layers.per_token_ffn import resolve_hidden_dim


def eq12(num_tokens: int, token_dim: int, num_layers: int, hidden_ratio: float) -> dict:
    """The paper's Eq. 12: params ~ 2kLTD^2, forward FLOPs ~ 4kLTD^2 per sample."""
    base = hidden_ratio * num_layers * num_tokens * token_dim**2
    return {"params": 2 * base, "flops_per_sample": 4 * base}


def _layer_flops(layer: keras.layers.Layer) -> int:
    if hasattr(layer, "flops_per_sample"):
        return int(layer.flops_per_sample())
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(layer.kernel.shape)
    return 0


def count_model(model: keras.Model) -> dict:
    """Params (dense / embedding / total) and forward FLOPs per sample of a built model.

    Example:

    >>> from keras_rankmixer.features import CategoricalFeature
    >>> from keras_rankmixer.models import build_from_preset
    >>> stats = count_model(build_from_preset("tiny", [CategoricalFeature("a", vocabulary_size=9)]))
    >>> stats["embedding_params"]
    160
    """
    embedding = 0
    flops = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Embedding):
            embedding += sum(math.prod(w.shape) for w in layer.weights)
        flops += _layer_flops(layer)
    total = sum(math.prod(w.shape) for w in model.weights)
    return {
        "params": total,
        "dense_params": total - embedding,
        "embedding_params": embedding,
        "flops_per_sample": flops,
    }


def count_config(
    num_tokens: int,
    token_dim: int,
    num_layers: int,
    hidden_ratio: float = 4,
    hidden_dim: int | None = None,
    input_width: int = 0,
    tower_units: tuple = (64,),
    num_tasks: int = 1,
    **_unused,
) -> dict:
    """Exact dense params and FLOPs of a config without building it (for 1B-size presets).

    `input_width` is the concatenated embedding width E (0 leaves the tokenizer out).
    Returns the block part separately (`block_params`, `block_flops_per_sample`), which is
    what Eq. 12 approximates.
    """
    t, d, layers = num_tokens, token_dim, num_layers
    h = resolve_hidden_dim(d, hidden_ratio, hidden_dim)
    block_params = layers * (t * (2 * d * h + h + d) + 4 * d)  # FFN + 2 LayerNorms
    block_flops = layers * 4 * t * d * h
    params, flops = block_params, block_flops
    if input_width:
        slice_dim = -(-input_width // t)
        params += t * (slice_dim * d + d)
        flops += 2 * t * slice_dim * d
    width = d
    for units in tower_units:
        params += num_tasks * (width * units + units)
        flops += num_tasks * 2 * width * units
        width = units
    params += num_tasks * (width + 1)
    flops += num_tasks * 2 * width
    return {
        "block_params": block_params,
        "block_flops_per_sample": block_flops,
        "dense_params": params,
        "flops_per_sample": flops,
    }
