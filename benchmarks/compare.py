"""Model comparison on a named dataset: DNN, DCNv2, RankMixer (and its family), several seeds.

One runner for every dataset in `DATASETS` (`--dataset frappe|census`); `benchmarks/frappe.py`
is this script with `--dataset frappe`. For each dataset the registry fixes the loader, the
tasks, the training settings (BARS-like: Adam, early stopping on the exact validation AUC with
patience 2, learning rate / 10 on a plateau) and, per model, the default config and the
`--tune` grid. Every model gets the same front-end (`features.embed_groups`, vocabularies and
numeric statistics adapted on the training split), the same embedding size and L2 penalty on
the embedding tables, and, under `--tune`, the same number of configs.

- **Several tasks** (Census-Income: `income`, `never_married`) are trained together (one tower
  each, the sum of the BCE losses); early stopping and model selection use the validation AUC
  averaged over the tasks; AUC and logloss are reported per task.
- **`--tune`** trains every config of each model's grid (or of `--grid FILE`) on the
  training split and reports validation AUC only: the test split is never read (the loader is
  not asked for it). Pick the config on validation, then run it with `--seeds N` on test.
- **Configs**: `--config MODEL=JSON` (repeatable) or `--configs FILE` (`{model: config}`);
  the keys `embedding_l2`, `tokenizer_l2` and `weight_decay` (AdamW instead of Adam) of a
  config are run settings, not builder arguments (so a grid may vary them with the same budget
  for every model).
- **Models**: `dnn`, `dcnv2`, `rankmixer` and its ablations (`models.baselines.VARIANTS`),
  `family` (the experimental RankMixer-family builder in this file: field or MLP tokenizer,
  post-LN RankMixer blocks or pre-RMSNorm mixing-and-reverting blocks, see `build_family`),
  and `tokenmixer_large` when `keras_rankmixer.models` provides it.

Output: a table, then one JSON line (last). Every run is appended to `<output>/results.jsonl`
(`tune.jsonl` under `--tune`); `--summarize FILES` prints the tables of earlier runs,
`--markdown` the RESULTS.md table and `--plot PNG` a test-AUC interval plot per model and task.

Usage:
    nice -n 10 python benchmarks/compare.py --dataset census --models dnn,dcnv2,rankmixer --tune
    nice -n 10 python benchmarks/compare.py --dataset census --seeds 3 \
        --config 'rankmixer={"num_tokens": 8, ...}'
    python benchmarks/compare.py --summarize runs/compare/census/results.jsonl --plot p.png

The data live in `../shared/data` (relative to the repo root) or `--data-dir`; the script
skips with a message when they are absent. Frappe may not be redistributed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data")
BASELINES = ("dnn", "dcnv2")
#: The baselines' config on every dataset (BARS' DNN: MLP 400-400-400, BN, dropout 0.2).
_MLP = {"hidden_units": (400, 400, 400), "batch_norm": True, "dropout": 0.2}
BASELINE_CONFIGS = {"dnn": dict(_MLP), "dcnv2": {"num_cross_layers": 3, **_MLP}}
#: The regularised head the RankMixer configs share with the baselines' MLP.
_TOWER = {"tower_units": (400, 400, 400), "tower_batch_norm": True, "tower_dropout": 0.2}
#: Run settings a config may carry (they are not builder arguments).
SETTING_KEYS = ("embedding_l2", "tokenizer_l2", "weight_decay")


def _frappe_loader(data_dir, embedding_dim, splits, train_limit=0):
    from keras_rankmixer.data import frappe_features, read_arrays

    files = {"train": "train_reconstructed.csv", "valid": "valid.csv", "test": "test.csv"}
    if not os.path.exists(os.path.join(data_dir, files["train"])):
        files["train"] = "train.csv"
    specs = frappe_features(embedding_dim=embedding_dim)
    out = {}
    for split in splits:
        r = read_arrays(os.path.join(data_dir, files[split]), specs)
        print(f"[compare] frappe {split}: {r.report.summary()} ({files[split]})")
        out[split] = (r.features, r.labels)
    return specs, out


def _census_loader(data_dir, embedding_dim, splits, train_limit=0):
    from keras_rankmixer.data.datasets import census_features, load_census

    out = load_census(data_dir, embedding_dim=embedding_dim, splits=splits)
    for split, (_, y) in out.items():
        rates = ", ".join(f"{t} {np.mean(v):.3f}" for t, v in y.items())
        print(f"[compare] census {split}: {len(next(iter(y.values())))} rows, positive {rates}")
    return census_features(embedding_dim), out


def _synthetic_loader(data_dir, embedding_dim, splits, train_limit=0):
    """The package's synthetic click log (`make_click_data`, seed 0, tasks click and like),
    100,000 rows split 80/10/10 in order: a held-out check of defaults tuned elsewhere."""
    from keras_rankmixer.data import make_click_data

    data = make_click_data(100_000, seed=0, tasks=("click", "like"), embedding_dim=embedding_dim)
    train, rest = data.split(0.8)
    valid, test = rest.split(0.5)
    parts = {"train": train, "valid": valid, "test": test}
    return data.specs, {s: (parts[s].features, parts[s].labels) for s in splits}


#: Dataset registry: loader, tasks, training settings, per-model default config and grid.
#: Grids have the same length for every model (the same tuning budget); the first entry of
#: each grid is its default config.
DATASETS: dict[str, dict] = {
    "frappe": {
        "benchmark": "frappe_x1",
        "data_dir": os.path.join(SHARED, "frappe_x1"),
        "present": "valid.csv",
        "load": _frappe_loader,
        "tasks": ("label",),
        "settings": {
            "embedding_dim": 10,
            "batch_size": 4096,
            "learning_rate": 1e-3,
            "patience": 2,
            "max_epochs": 50,
            "embedding_l2": 0.1,
        },
        "configs": {
            **BASELINE_CONFIGS,
            # the best on validation of benchmarks/RESULTS.md's Frappe tuning (issue #4)
            "rankmixer": {
                "num_tokens": 5,
                "token_dim": 40,
                "num_layers": 1,
                "hidden_ratio": 4,
                "pooling": "flatten",
                **_TOWER,
            },
        },
        "grids": {},
    },
    "census": {
        "benchmark": "census_income",
        "data_dir": os.path.join(SHARED, "census_income"),
        "present": "census-income.test.gz",
        "load": _census_loader,
        "tasks": ("income", "never_married"),
        "settings": {
            "embedding_dim": 16,
            "batch_size": 1024,
            "learning_rate": 1e-3,
            "patience": 2,
            "max_epochs": 50,
            "embedding_l2": 0.01,
        },
        "configs": {
            **BASELINE_CONFIGS,
            "rankmixer": {
                "num_tokens": 8,
                "token_dim": 64,
                "num_layers": 2,
                "hidden_ratio": 4,
                "pooling": "flatten",
                **_TOWER,
            },
        },
        "grids": {},
    },
}


DATASETS["synthetic"] = {
    "benchmark": "synthetic_clicks",
    "data_dir": REPO,  # generated, nothing to read
    "present": "",
    "load": _synthetic_loader,
    "tasks": ("click", "like"),
    "settings": dict(DATASETS["census"]["settings"]),
    "configs": {m: dict(c) for m, c in DATASETS["census"]["configs"].items()},
    "grids": {},
}

#: The embedding-L2 values of the default grids; the first is the dataset's default.
L2_GRIDS = {"frappe": (0.1, 0.01, 0.05), "census": (0.01, 0.0, 0.001), "synthetic": (0.01,)}

for _name, _ds in DATASETS.items():
    _ds["grids"] = {
        m: [dict(c, embedding_l2=v) for v in L2_GRIDS[_name]] for m, c in _ds["configs"].items()
    }
# Census RankMixer: the same budget (3 configs) over shape instead of L2.
DATASETS["census"]["grids"]["rankmixer"] = [
    DATASETS["census"]["configs"]["rankmixer"],
    dict(DATASETS["census"]["configs"]["rankmixer"], num_tokens=4, token_dim=64),
    dict(DATASETS["census"]["configs"]["rankmixer"], num_layers=1),
]


# ----------------------------------------------------------------------------- models


def build_family(
    features,
    tasks,
    *,
    num_tokens: int,
    token_dim: int,
    num_layers: int = 1,
    hidden_ratio: float = 4,
    tokenizer: str = "field",
    tokenizer_units=(),
    tokenizer_options: dict | None = None,
    block: str = "rankmixer",
    block_options: dict | None = None,
    num_heads: int | None = None,
    ffn: str = "gelu",
    dropout: float = 0.0,
    down_init_scale: float | None = None,
    drop_path: float = 0.0,
    token_norm: bool = False,
    final_norm: bool = False,
    pooling: str = "flatten",
    embedding_skip: bool = False,
    token_skip: bool = False,
    fusion: str | None = None,
    fusion_heads: int = 10,
    stream_2_units=None,
    feature_gating: dict | None = None,
    tower_units=(400, 400, 400),
    tower_batch_norm: bool = True,
    tower_dropout: float = 0.2,
    tower_activation: str = "gelu",
    name: str = "family",
):
    """An experimental RankMixer-family model, one switch per design choice.

    front-end -> tokenizer -> `num_layers` blocks -> [final RMSNorm] -> pooling -> towers.

    - `tokenizer="field"`: RankMixer's Eq. 2 (`FeatureTokenizer`: the concatenated group
      embeddings cut into T slices, one projection each); `"mlp"`: tokens decoupled from
      fields, a shared MLP over all embeddings (`tokenizer_units` hidden ReLU+BN layers, then
      a linear map to T*D) reshaped into T tokens (RankElastor's tokenizer).
    - `block="rankmixer"`: the post-LN `RankMixerBlock` (H = T, residual across layouts);
      `"prenorm"`: the same layout with pre-RMSNorm, `S = X + Mix(N(X))`,
      `X' = S + FFN(N(S))`; `"revert"`: TokenMixer-Large's mixing and reverting,
      `H = Mix_H(X)`, `H' = H + FFN_mix(N(H))`, `X' = X + FFN_rev(N(Revert(H')))`
      (any `num_heads` H dividing T*D; two FFN banks).
      `"tml"`: the package's `TokenMixerLargeBlock` (the same design with pSwiGLU banks and
      small init by default; `block_options` are its ablation switches, e.g.
      `{"use_revert": false}`, `{"norm": "post_layer_norm"}`, `{"ffn": "gelu"}`).
    - `tokenizer="shared_mlp"` / `"group"`: the package's `SharedMLPTokenizer` (one MLP,
      GELU) / `GroupTokenizer` (one MLP per semantic group plus a global token; T = groups
      + 1), with `tokenizer_options` as their keyword arguments.
    - `ffn`: `"gelu"` (`PerTokenFFN`) or `"swiglu"` (`PerTokenSwiGLU`) in the pre-norm blocks.
    - `drop_path`: stochastic depth on the `"rankmixer"` / `"tml"` blocks: in training each
      sample keeps a block's change `block(x) - x` with probability `1 - drop_path` (scaled
      by its inverse) and otherwise skips the block; at inference every block runs as is.
    - `token_norm`: a LayerNorm on each token before the blocks (with L=0: what post-LN alone
      does to the tokenizer's output).
    - `embedding_skip`: the towers also see the concatenated embeddings (a deep stream beside
      the token stream, as DCNv2's parallel MLP sits beside its cross layers).
    - `token_skip`: the towers also see the tokenizer's tokens, flattened, beside the blocks'
      output (the blocks in parallel with an L=0 read-out instead of in series before it).
    - `fusion="bilinear"`: FinalMLP's two-stream head (Mao et al., AAAI 2023) without its
      feature gating: stream 1 is the tower MLP on the tokens, stream 2 the same MLP on the
      concatenated embeddings, and each task's logit is `w1.o1 + w2.o2 + sum_h o1_h W_h o2_h
      + b` over `fusion_heads` chunks. `stream_2_units` (default `tower_units`) sizes
      stream 2's MLP (FinalMLP's Frappe config: stream 1 (400,), stream 2 (100,), 5 heads).
    - `feature_gating`: FinalMLP's feature selection, with `fusion="bilinear"`: each stream
      reads the embeddings times its own gate `2 * sigmoid(MLP(context))`, where the context
      is the concatenated embeddings of the groups (or of the features' groups) in
      `{"context_1": [...]}` /
      `{"context_2": [...]}` (an empty list: a learned vector of `_FREE_CONTEXT` values)
      and the MLP has `"units"` (default (400,)) ReLU layers; stream 1 gates the embeddings
      before the tokenizer.
    - `tokenizer="none"`: no projection, the (gated) embeddings cut into T slices of E/T
      values (with `num_layers=0`, flatten pooling and `fusion="bilinear"` this is FinalMLP
      itself, the reference for the family's head; with blocks, e.g. `block="tml"` whose
      small-init residual branches start near identity, the blocks refine raw embeddings).
    """
    import keras

    from keras_rankmixer.features import build_inputs, embed_groups, group_order
    from keras_rankmixer.layers.feature_tokenizer import FeatureTokenizer
    from keras_rankmixer.layers.per_token_ffn import PerTokenFFN
    from keras_rankmixer.layers.rankmixer_block import RankMixerBlock
    from keras_rankmixer.layers.token_mixing import TokenMixing
    from keras_rankmixer.models.rankmixer import add_task_towers

    if block not in ("rankmixer", "prenorm", "revert", "tml"):
        raise ValueError(f"`block` must be rankmixer, prenorm, revert or tml, got {block!r}.")
    if token_skip and pooling != "flatten":
        raise ValueError("`token_skip` needs `pooling='flatten'`.")
    if feature_gating is not None and fusion != "bilinear":
        raise ValueError("`feature_gating` needs `fusion='bilinear'` (FinalMLP's two streams).")
    inputs = build_inputs(features)
    groups = embed_groups(inputs, features)
    gated = {}
    if feature_gating is not None:
        names = group_order(features)
        group_of = {f.name: f.group for f in features}
        flat = groups[0] if len(groups) == 1 else keras.layers.Concatenate(name="gate_in")(groups)
        for k in (1, 2):
            context = []
            for name in feature_gating.get(f"context_{k}", []):
                g = name if name in names else group_of.get(name)
                if g is None:
                    raise ValueError(f"feature_gating context {name!r}: not a feature or group.")
                context.append(groups[names.index(g)])
            gated[k] = _FeatureGate(feature_gating.get("units", (400,)), name=f"feature_gate_{k}")(
                [flat, *context]
            )
        groups_1 = [gated[1]]
    else:
        groups_1 = groups
    if tokenizer == "none":  # no projection: the (gated) embeddings cut into T slices
        e = groups_1[0] if len(groups_1) == 1 else keras.layers.Concatenate()(groups_1)
        if e.shape[-1] % num_tokens:
            raise ValueError(f"`tokenizer='none'`: width {e.shape[-1]} not divisible by T.")
        x = keras.layers.Reshape((num_tokens, e.shape[-1] // num_tokens), name="tokens")(e)
    elif tokenizer == "field":
        x = FeatureTokenizer(num_tokens, token_dim, name="tokenizer")(groups_1)
    elif tokenizer == "mlp":
        h = (
            groups_1[0]
            if len(groups_1) == 1
            else keras.layers.Concatenate(name="embeddings")(groups_1)
        )
        for i, units in enumerate(tokenizer_units):
            h = keras.layers.Dense(units, name=f"tokenizer_dense_{i}")(h)
            h = keras.layers.BatchNormalization(momentum=0.9, name=f"tokenizer_bn_{i}")(h)
            h = keras.layers.Activation("relu", name=f"tokenizer_relu_{i}")(h)
        h = keras.layers.Dense(num_tokens * token_dim, name="tokenizer")(h)
        x = keras.layers.Reshape((num_tokens, token_dim), name="tokens")(h)
    elif tokenizer in ("shared_mlp", "group"):
        from keras_rankmixer.layers.group_tokenizer import GroupTokenizer, SharedMLPTokenizer

        opts = dict(tokenizer_options or {})
        if tokenizer == "group":  # one token per semantic group (+ a global token)
            x = GroupTokenizer(token_dim, name="tokenizer", **opts)(groups_1)
            num_tokens = len(groups) + int(opts.get("global_token", True))
        else:
            x = SharedMLPTokenizer(num_tokens, token_dim, name="tokenizer", **opts)(groups_1)
    else:
        raise ValueError(
            f"`tokenizer` must be field, mlp, shared_mlp, group or none, got {tokenizer!r}."
        )
    if tokenizer in ("group", "shared_mlp") and feature_gating is not None:
        raise ValueError("`feature_gating` works with the field, mlp and none tokenizers.")
    if token_norm:
        x = keras.layers.LayerNormalization(name="token_norm")(x)

    def make_ffn(name):
        if ffn == "swiglu":
            from keras_rankmixer.layers.per_token_swiglu import PerTokenSwiGLU

            return PerTokenSwiGLU(
                hidden_ratio=hidden_ratio, down_init_scale=down_init_scale, name=name
            )
        return PerTokenFFN(hidden_ratio=hidden_ratio, name=name)

    def branch(y, name):
        y = keras.layers.RMSNormalization(name=f"{name}_norm")(y)
        y = make_ffn(f"{name}_ffn")(y)
        return keras.layers.Dropout(dropout, name=f"{name}_dropout")(y) if dropout else y

    if drop_path and block not in ("rankmixer", "tml"):
        raise ValueError("`drop_path` works with the rankmixer and tml blocks.")
    tokens = x
    for i in range(num_layers):
        if block == "rankmixer":
            y = RankMixerBlock(hidden_ratio=hidden_ratio, dropout=dropout, name=f"block_{i}")(x)
            x = _DropPath(drop_path, name=f"block_{i}_drop_path")([x, y]) if drop_path else y
        elif block == "tml":
            from keras_rankmixer.layers.tokenmixer_large_block import TokenMixerLargeBlock

            y = TokenMixerLargeBlock(
                num_heads=num_heads,
                hidden_ratio=hidden_ratio,
                dropout=dropout,
                name=f"block_{i}",
                **(block_options or {}),
            )(x)
            x = _DropPath(drop_path, name=f"block_{i}_drop_path")([x, y]) if drop_path else y
        elif block == "prenorm":
            n = keras.layers.RMSNormalization(name=f"block_{i}_mix_norm")(x)
            s = keras.layers.Add(name=f"block_{i}_mix_add")([x, TokenMixing(name=f"mix_{i}")(n)])
            x = keras.layers.Add(name=f"block_{i}_add")([s, branch(s, f"block_{i}")])
        else:
            h = TokenMixing(num_heads=num_heads, name=f"mix_{i}")(x)
            h = keras.layers.Add(name=f"block_{i}_mix_add")([h, branch(h, f"block_{i}_mix")])
            r = TokenMixing(num_heads=num_tokens, name=f"revert_{i}")(h)
            x = keras.layers.Add(name=f"block_{i}_add")([x, branch(r, f"block_{i}_rev")])
    if final_norm:
        x = keras.layers.RMSNormalization(name="final_norm")(x)
    if pooling == "flatten":
        pooled = keras.layers.Flatten(name="flatten_tokens")(x)
    else:
        pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    if token_skip:
        skip = keras.layers.Flatten(name="flatten_skip_tokens")(tokens)
        pooled = keras.layers.Concatenate(name="tokens_and_blocks")([skip, pooled])
    if embedding_skip:
        flat = groups[0] if len(groups) == 1 else keras.layers.Concatenate(name="skip")(groups)
        pooled = keras.layers.Concatenate(name="tokens_and_embeddings")([pooled, flat])
    if fusion == "bilinear":
        if gated:
            flat = gated[2]
        elif len(groups) == 1:
            flat = groups[0]
        else:
            flat = keras.layers.Concatenate(name="stream_2_in")(groups)

        def stream(h, prefix, layer_units):
            for i, units in enumerate(layer_units):
                h = keras.layers.Dense(units, name=f"{prefix}_{i}")(h)
                if tower_batch_norm:
                    h = keras.layers.BatchNormalization(momentum=0.9, name=f"{prefix}_bn_{i}")(h)
                h = keras.layers.Activation(tower_activation, name=f"{prefix}_act_{i}")(h)
                if tower_dropout:
                    h = keras.layers.Dropout(tower_dropout, name=f"{prefix}_dropout_{i}")(h)
            return h

        o1 = stream(pooled, "stream_1", tower_units)
        o2 = stream(flat, "stream_2", tower_units if stream_2_units is None else stream_2_units)
        outputs = {
            t: keras.layers.Activation("sigmoid", dtype="float32", name=t)(
                _BilinearFusion(fusion_heads, name=f"{t}_fusion")([o1, o2])
            )
            for t in tasks
        }
        return keras.Model(inputs, outputs, name=name)
    outputs = add_task_towers(
        pooled,
        tasks,
        tower_units,
        dropout=tower_dropout,
        batch_norm=tower_batch_norm,
        activation=tower_activation,
    )
    return keras.Model(inputs, outputs, name=name)


def _bilinear_fusion_class():
    import keras
    from keras import ops

    class BilinearFusion(keras.layers.Layer):
        """FinalMLP's multi-head bilinear fusion of two vectors into one logit."""

        def __init__(self, heads, **kwargs):
            super().__init__(**kwargs)
            self.heads = heads

        def build(self, shapes):
            (_, d1), (_, d2) = shapes
            h = self.heads
            self.w1 = self.add_weight(shape=(d1, 1), initializer="glorot_uniform", name="w1")
            self.w2 = self.add_weight(shape=(d2, 1), initializer="glorot_uniform", name="w2")
            self.w3 = self.add_weight(
                shape=(h, d1 // h, d2 // h), initializer="glorot_uniform", name="w3"
            )
            self.b = self.add_weight(shape=(1,), initializer="zeros", name="b")

        def call(self, inputs):
            x, y = inputs
            h = self.heads
            xh = ops.reshape(x, (-1, h, x.shape[-1] // h))
            yh = ops.reshape(y, (-1, h, y.shape[-1] // h))
            bilinear = ops.sum(ops.einsum("bhi,hij->bhj", xh, self.w3) * yh, axis=(1, 2))
            return ops.matmul(x, self.w1) + ops.matmul(y, self.w2) + bilinear[:, None] + self.b

    return BilinearFusion


def _BilinearFusion(heads, **kwargs):
    return _bilinear_fusion_class()(heads, **kwargs)


def _DropPath(rate, **kwargs):
    """Stochastic depth: `[x, y] -> x + m * (y - x) / (1 - rate)`, `m ~ Bernoulli(1 - rate)`
    per sample in training; `y` at inference."""
    import keras
    from keras import ops

    class DropPath(keras.layers.Layer):
        def __init__(self, rate, **kwargs):
            super().__init__(**kwargs)
            self.rate = float(rate)
            self.seed_generator = keras.random.SeedGenerator()

        def call(self, inputs, training=None):
            x, y = inputs
            if not training:
                return y
            keep = 1.0 - self.rate
            shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
            mask = ops.cast(keras.random.uniform(shape, seed=self.seed_generator) < keep, x.dtype)
            return x + (y - x) * mask / keep

    return DropPath(rate, **kwargs)


#: Width of the learned context vector of a gate without context features.
_FREE_CONTEXT = 16


def _FeatureGate(units, **kwargs):
    """FinalMLP's feature selection: `[x, *context] -> x * 2 * sigmoid(MLP(context))`."""
    import keras
    from keras import ops

    class FeatureGate(keras.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = tuple(units)

        def build(self, shapes):
            width = shapes[0][-1]
            if len(shapes) == 1:  # no context features: a learned context vector
                self.context = self.add_weight(
                    shape=(1, _FREE_CONTEXT), initializer="zeros", name="ctx"
                )
            self.hidden = [
                keras.layers.Dense(u, activation="relu", name=f"dense_{i}")
                for i, u in enumerate(self.units)
            ]
            self.gate = keras.layers.Dense(width, name="gate")
            c = _FREE_CONTEXT if len(shapes) == 1 else sum(s[-1] for s in shapes[1:])
            for layer in self.hidden:
                layer.build((None, c))
                c = layer.units
            self.gate.build((None, c))

        def call(self, inputs):
            x, *context = inputs
            if context:
                c = context[0] if len(context) == 1 else ops.concatenate(context, axis=-1)
            else:
                c = ops.broadcast_to(self.context, (ops.shape(x)[0], _FREE_CONTEXT))
            for layer in self.hidden:
                c = layer(c)
            return x * 2.0 * ops.sigmoid(self.gate(c))

    return FeatureGate(units, **kwargs)


def build(name: str, specs, tasks, config: dict):
    """The model `name` with builder arguments `config` (run settings removed)."""
    from keras_rankmixer.models.baselines import build_model

    kwargs = {k: v for k, v in config.items() if k not in SETTING_KEYS}
    if name == "family":
        return build_family(specs, list(tasks), **kwargs)
    if name == "tokenmixer_large":
        from keras_rankmixer.models import TokenMixerLargeBackbone, TokenMixerLargeRanker

        head = ("tower_units", "tower_dropout", "tower_batch_norm", "tower_activation")
        ranker = {k: kwargs.pop(k) for k in (*head, "aux_loss_weight") if k in kwargs}
        backbone = TokenMixerLargeBackbone(specs, **kwargs)
        return TokenMixerLargeRanker(backbone, tasks=list(tasks), **ranker)
    return build_model(name, specs, tasks=list(tasks), **kwargs)


# ----------------------------------------------------------------------------- one run

#: Variables (by name) that a config's `weight_decay` leaves alone: the embeddings keep their L2.
NO_WEIGHT_DECAY = ("embeddings",)


def make_optimizer(learning_rate, weight_decay):
    """AdamW with decoupled `weight_decay` on every weight but the embeddings."""
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


def run_one(name, config, specs, splits, seed, args, dataset, evaluate_test=True):
    """Train `name` with `config` and `seed` to early stopping; a result dict."""
    import keras

    from keras_rankmixer.flops import count_model
    from keras_rankmixer.models.baselines import set_embedding_l2
    from keras_rankmixer.models.compile_defaults import ranking_compile_arguments
    from keras_rankmixer.training import evaluate_exact, load_history, training_callbacks

    tasks = list(dataset["tasks"])
    keras.utils.set_random_seed(seed)
    model = build(name, specs, tasks, config)
    embedding_l2 = config.get("embedding_l2", args.embedding_l2)
    tokenizer_l2 = config.get("tokenizer_l2", 0.0)
    set_embedding_l2(model, embedding_l2)
    if tokenizer_l2:
        # the same penalty on the tokenizer's projection (it can otherwise grow to undo the
        # embedding penalty: embeddings / c, projection * c)
        model.get_layer("tokenizer").kernel.regularizer = keras.regularizers.L2(tokenizer_l2)
    stats = count_model(model)
    # The package's ranking defaults (Adam, or AdamW with a config's `weight_decay`; binary
    # cross-entropy per task) for every model, a Ranker or the plain models of `build_family`;
    # no Keras metrics: the exact AUC is computed on the whole split after each epoch
    # (`training_callbacks`).
    weight_decay = config.get("weight_decay", 0.0)
    model.compile(
        **ranking_compile_arguments(
            tasks,
            optimizer=make_optimizer(args.learning_rate, weight_decay) if weight_decay else "auto",
            learning_rate=None if weight_decay else args.learning_rate,
            metrics=None,
            jit_compile=not args.no_jit,
        )
    )
    tag = json.dumps(config, sort_keys=True)
    # one directory per process and run: parallel invocations never share a history file
    run_dir = os.path.join(
        args.output, "runs", f"{name}_s{seed}_{abs(hash(tag)) % 10**6}_p{os.getpid()}"
    )
    if os.path.exists(os.path.join(run_dir, "history.json")):
        os.remove(os.path.join(run_dir, "history.json"))
    callbacks = training_callbacks(
        run_dir,
        splits["valid"],
        patience=args.patience,
        reduce_lr_on_plateau=not args.no_reduce_lr,
        resume=False,
        plot=False,
    )
    x, y = splits["train"]
    start = time.time()
    model.fit(
        x,
        {t: y[t] for t in tasks},
        batch_size=args.batch_size,
        epochs=args.max_epochs,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.time() - start
    history = load_history(os.path.join(run_dir, "history.json"))
    best = max(history, key=lambda h: h["val_auc_exact"])
    result = {
        "dataset": args.dataset,
        "model": name,
        "seed": seed,
        "config": config,
        "params": stats["params"],
        "dense_params": stats["dense_params"],
        "flops_per_sample": stats["flops_per_sample"],
        "epochs": len(history),
        "best_epoch": best["epoch"] + 1,
        "valid_auc": best["val_auc_exact"],
        "valid_logloss": best["val_logloss_exact"],
        "train_seconds": round(seconds, 1),
        "load": [round(v, 2) for v in os.getloadavg()],
    }
    if len(tasks) > 1:
        for t in tasks:
            result[f"valid_{t}_auc"] = best[f"val_{t}_auc_exact"]
            result[f"valid_{t}_logloss"] = best[f"val_{t}_logloss_exact"]
    if evaluate_test:
        test = evaluate_exact(model, splits["test"])
        if len(tasks) == 1:
            result["test_auc"], result["test_logloss"] = test["auc"], test["logloss"]
        else:
            for t in tasks:
                result[f"test_{t}_auc"] = test[f"{t}_auc"]
                result[f"test_{t}_logloss"] = test[f"{t}_logloss"]
            result["test_auc"] = float(np.mean([test[f"{t}_auc"] for t in tasks]))
            result["test_logloss"] = float(np.mean([test[f"{t}_logloss"] for t in tasks]))
    result["settings"] = {
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "embedding_dim": args.embedding_dim,
        "embedding_l2": embedding_l2,
        "patience": args.patience,
        "max_epochs": args.max_epochs,
        "no_reduce_lr": args.no_reduce_lr,
    }
    if tokenizer_l2:
        result["settings"]["tokenizer_l2"] = tokenizer_l2
    if weight_decay:
        result["settings"]["weight_decay"] = weight_decay
    print(f"[compare] {json.dumps(result)}", flush=True)
    return result


# ----------------------------------------------------------------------------- summaries


def _is_baseline(model: str) -> bool:
    return model in BASELINES


def _settings_tag(r):
    """The regularisation settings a run differs by (results of several sweeps side by side)."""
    s = r.get("settings", {})
    tag = f" l2={s.get('embedding_l2', 0.0):g}"
    if s.get("weight_decay"):
        tag += f" weight_decay={s['weight_decay']:g}"
    if not _is_baseline(r["model"]):  # no tokenizer; the baselines' dropout is in their config
        if s.get("tokenizer_l2"):
            tag += f" tokenizer_l2={s['tokenizer_l2']:g}"
        if "dropout" in s:  # the FFN dropout of benchmarks/frappe.py's older records
            tag += f" dropout={s['dropout']:g}"
    return tag


def _config_key(config) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in SETTING_KEYS}, sort_keys=True)


def task_metrics(results) -> list[str]:
    """The per-task metric names present in `results` (`test_income_auc`, ...), or the
    single-task names."""
    names = []
    for r in results:
        for k in r:
            if (k.startswith("valid_") or k.startswith("test_")) and k not in names:
                names.append(k)
    return names


def summarize(results):
    """One row per (dataset, model, config, regularisation): mean and std over seeds."""
    groups = {}
    seen = set()
    for r in results:
        key = (r.get("dataset", ""), r["model"], _config_key(r["config"]), _settings_tag(r))
        # the same model, config and seed run twice (by parallel invocations) counts once
        if key + (r["seed"],) in seen:
            continue
        seen.add(key + (r["seed"],))
        groups.setdefault(key, []).append(r)
    rows = []
    for rs in groups.values():
        row = {
            "dataset": rs[0].get("dataset", ""),
            "model": rs[0]["model"],
            "config": rs[0]["config"],
            "seeds": len(rs),
            "settings": _settings_tag(rs[0]).strip(),
            "params": rs[0]["params"],
            "flops_per_sample": rs[0].get("flops_per_sample", 0),
            "train_seconds_mean": round(float(np.mean([r["train_seconds"] for r in rs])), 1),
            "epochs_mean": round(float(np.mean([r["epochs"] for r in rs])), 1),
        }
        for metric in task_metrics(rs):
            vals = [r[metric] for r in rs if metric in r]
            if vals and all(isinstance(v, int | float) for v in vals):
                row[f"{metric}_mean"] = float(np.mean(vals))
                row[f"{metric}_std"] = float(np.std(vals))
        rows.append(row)
    return rows


def _ms(r, m, width=0):
    if f"{m}_mean" not in r:
        return "-".rjust(width)
    return f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f}".rjust(width)


def _tasks_of(rows) -> list[str]:
    """The task names of multi-task rows (from `valid_<task>_auc_mean`); [] for one task."""
    tasks = []
    for r in rows:
        for k in r:
            if k.startswith("valid_") and k.endswith("_auc_mean") and k != "valid_auc_mean":
                t = k[len("valid_") : -len("_auc_mean")]
                if t not in tasks:
                    tasks.append(t)
    return tasks


def _columns(rows) -> list[tuple[str, str]]:
    """(label, metric) columns after the mean validation AUC: test AUC and logloss, per task
    (and the task's validation AUC) when there are several tasks."""
    tasks = _tasks_of(rows)
    if not tasks:
        return [("test AUC", "test_auc"), ("test logloss", "test_logloss")]
    kinds = (("valid AUC", "valid", "auc"), ("AUC", "test", "auc"), ("logloss", "test", "logloss"))
    cols = [(f"{t} {w}", f"{s}_{t}_{m}") for t in tasks for w, s, m in kinds]
    return [c for c in cols if any(f"{c[1]}_mean" in r for r in rows)]  # no test under --tune


def print_table(rows):
    cols = [m for _, m in _columns(rows)]
    head = f"{'model':<18} {'seeds':>5} {'params':>9} {'valid AUC':>17} " + " ".join(
        f"{label:>17}" for label, _ in _columns(rows)
    )
    print(head + f" {'epochs':>6} {'train s':>8}")
    print("-" * (len(head) + 16))
    for r in rows:
        print(
            f"{r['model']:<18} {r['seeds']:>5} {r['params']:>9,} {_ms(r, 'valid_auc', 17)} "
            + " ".join(_ms(r, c, 17) for c in cols)
            + f" {r['epochs_mean']:>6} {r['train_seconds_mean']:>8}"
        )
        extra = "" if _is_baseline(r["model"]) else _config_key(r["config"])
        print(f"{'':<18} {r['settings']} {extra}")


def describe_rankmixer(cfg: dict) -> str:
    """A short label for a RankMixer config: T, D, L, k, pooling, and the tower when it sets one
    (its activation when it is not the default GELU)."""
    text = "T={} D={} L={} k={}".format(
        cfg["num_tokens"], cfg["token_dim"], cfg["num_layers"], cfg.get("hidden_ratio", 4)
    )
    if "pooling" in cfg:
        text += f" {cfg['pooling']} pooling"
    if "tower_units" in cfg:
        text += f", tower {tuple(cfg['tower_units'])}"
    if cfg.get("tower_batch_norm"):
        text += " + BN"
    if cfg.get("tower_dropout"):
        text += f" + dropout {cfg['tower_dropout']:g}"
    if cfg.get("tower_activation", "gelu") != "gelu":
        text += f" ({cfg['tower_activation']})"
    return text


def describe(model: str, cfg: dict) -> str:
    """`describe_rankmixer` for RankMixer-shaped configs, sorted JSON otherwise."""
    if not _is_baseline(model) and "num_tokens" in cfg and model != "family":
        return describe_rankmixer(cfg)
    return _config_key(cfg)


def print_markdown(rows):
    """The same table as Markdown (for benchmarks/RESULTS.md): per-task test AUC and logloss
    when there are several tasks."""
    cols = _columns(rows)
    print(
        "| model | config | regularisation | seeds | params | FLOPs/sample | valid AUC | "
        + " | ".join(c for c, _ in cols)
        + " | epochs | train s |"
    )
    print("|" + "---|" * (9 + len(cols)))
    for r in rows:
        print(
            f"| {r['model']} | {describe(r['model'], r['config'])} | {r['settings']} | "
            f"{r['seeds']} | {r['params']:,} | {r.get('flops_per_sample', 0):,} | "
            f"{_ms(r, 'valid_auc')} | "
            + " | ".join(_ms(r, m) for _, m in cols)
            + f" | {r['epochs_mean']} | {r['train_seconds_mean']} |"
        )


def plot(rows, path: str, title: str = "") -> str:
    """Test AUC mean ± std per model (one panel per task), small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tasks = _tasks_of(rows) or [None]
    rows = [r for r in rows if "test_auc_mean" in r]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 1.5, 2.6), squeeze=False)
    labels = [r.get("label", r["model"]) for r in rows]
    for ax, t in zip(axes[0], tasks, strict=True):
        m = "test_auc" if t is None else f"test_{t}_auc"
        means = [r[f"{m}_mean"] for r in rows]
        stds = [r[f"{m}_std"] for r in rows]
        ax.errorbar(means, range(len(rows)), xerr=stds, fmt="o", capsize=3)
        ax.set_yticks(range(len(rows)), labels if ax is axes[0][0] else [""] * len(rows))
        ax.set_title(t or "test AUC", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="frappe")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", default="dnn,dcnv2,rankmixer")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--embedding-dim", type=int, default=None)
    p.add_argument("--embedding-l2", type=float, default=None)
    p.add_argument("--tokenizer-l2", type=float, default=0.0, help="L2 on the tokenizer kernel")
    p.add_argument("--no-reduce-lr", action="store_true")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="MODEL=JSON",
        help="a model's config (builder kwargs, plus embedding_l2/tokenizer_l2/weight_decay); "
        "repeatable",
    )
    p.add_argument("--configs", default=None, help="JSON file {model: config}")
    p.add_argument(
        "--best-of",
        nargs="+",
        default=None,
        metavar="JSONL",
        help="use each model's best config by mean validation AUC in these tune.jsonl files",
    )
    p.add_argument(
        "--rankmixer", default=None, help="JSON config of every RankMixer variant (frappe.py)"
    )
    p.add_argument("--dropout", type=float, default=None, help="RankMixer FFN dropout (frappe.py)")
    p.add_argument("--tune", action="store_true", help="each model's grid, validation only")
    p.add_argument("--grid", default=None, help="JSON file {model: [config, ...]} for --tune")
    p.add_argument("--tune-configs", type=int, default=0, help="only the first N grid configs")
    p.add_argument("--no-jit", action="store_true")
    p.add_argument("--output", default=None)
    p.add_argument("--train-limit", type=int, default=0, help="use only N train rows (smoke)")
    p.add_argument("--summarize", nargs="+", default=None, metavar="JSONL")
    p.add_argument("--plot", default=None, help="write a test-AUC plot (PNG) of the rows")
    return p.parse_args(argv)


def _resolve(args):
    """Fill the dataset's settings into `args`; the configs and grids per model."""
    ds = DATASETS[args.dataset]
    for k, v in ds["settings"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.data_dir is None:
        args.data_dir = ds["data_dir"]
    if args.output is None:
        args.output = os.path.join(REPO, "runs", "compare", args.dataset)
    configs = {m: dict(c) for m, c in ds["configs"].items()}
    grids = {m: [dict(c) for c in g] for m, g in ds["grids"].items()}
    if args.configs:
        with open(args.configs) as f:
            configs.update(json.load(f))
    if args.best_of:
        configs.update(best_configs(_load_results(args.best_of), args.dataset))
    given = {}
    for item in args.config:
        model, _, text = item.partition("=")
        given[model] = json.loads(text)
    if args.rankmixer:
        from keras_rankmixer.models.baselines import VARIANTS

        given.update({m: json.loads(args.rankmixer) for m in VARIANTS})
    configs.update(given)
    if args.grid:
        with open(args.grid) as f:
            grids.update(json.load(f))
    for m in given:  # a config given on the command line is the grid of that model
        grids[m] = [given[m]]
    models = args.models.split(",")
    for m in models:
        if m not in configs:
            configs[m] = dict(configs["rankmixer"])  # an ablation of the default RankMixer
        grids.setdefault(m, [configs[m]])
        for c in [configs[m], *grids[m]]:
            if not _is_baseline(m) and args.dropout is not None:
                c.setdefault("dropout", args.dropout)
            if args.tokenizer_l2 and not _is_baseline(m):
                c.setdefault("tokenizer_l2", args.tokenizer_l2)
    if args.tune:
        sizes = {m: len(grids[m]) for m in models}
        n = args.tune_configs or min(sizes.values())
        if args.tune_configs == 0 and len(set(sizes.values())) > 1:
            print(f"[compare] unequal grids {sizes}: every model gets the first {n} (same budget)")
        grids = {m: grids[m][:n] for m in models}
    return ds, models, configs, grids


def best_configs(results, dataset: str) -> dict[str, dict]:
    """`{model: config}` with the highest mean validation AUC (over seeds) per model."""
    best = {}
    for row in summarize([r for r in results if r.get("dataset", dataset) == dataset]):
        m = row["model"]
        if m not in best or row["valid_auc_mean"] > best[m]["valid_auc_mean"]:
            best[m] = row
    for m, row in best.items():
        print(
            f"[compare] best of tuning: {m} valid AUC {row['valid_auc_mean']:.4f} {row['config']}"
        )
    return {m: dict(row["config"]) for m, row in best.items()}


def _load_results(paths):
    results = []
    for path in paths:
        with open(path) as f:
            results += [json.loads(line) for line in f if line.strip()]
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    ds = DATASETS[args.dataset]
    if args.summarize:
        results = _load_results(args.summarize)
        rows = summarize(results)
        print(f"{ds['benchmark']}, summary of {len(results)} runs from {args.summarize}")
        print_table(rows)
        print()
        print_markdown(rows)
        if args.plot:
            print(f"[compare] plot: {plot(rows, args.plot, ds['benchmark'])}")
        print(
            json.dumps({"benchmark": ds["benchmark"], "summary_of": args.summarize, "rows": rows})
        )
        return 0
    ds, models, configs, grids = _resolve(args)
    if not os.path.exists(os.path.join(args.data_dir, ds["present"])) and not os.path.isfile(
        args.data_dir
    ):
        print(
            f"[compare] SKIPPED: {ds['benchmark']} data not found in {args.data_dir!r} "
            "(pass --data-dir; Frappe may not be redistributed)."
        )
        print(json.dumps({"benchmark": ds["benchmark"], "skipped": True}))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_rankmixer.data import adapt_vocabularies

    splits_wanted = ("train", "valid") if args.tune else ("train", "valid", "test")
    specs, splits = ds["load"](args.data_dir, args.embedding_dim, splits_wanted)
    if args.train_limit:
        x, y = splits["train"]
        n = args.train_limit
        splits["train"] = ({k: v[:n] for k, v in x.items()}, {k: v[:n] for k, v in y.items()})
    specs = adapt_vocabularies(specs, splits["train"][0])
    os.makedirs(args.output, exist_ok=True)
    log_path = os.path.join(args.output, "tune.jsonl" if args.tune else "results.jsonl")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.tune:
        jobs = [(m, c, s) for m in models for c in grids[m] for s in seeds]
    else:
        jobs = [(m, configs[m], s) for s in seeds for m in models]
    results = []
    for name, config, seed in jobs:
        r = run_one(name, config, specs, splits, seed, args, ds, evaluate_test=not args.tune)
        results.append(r)
        with open(log_path, "a") as f:
            f.write(json.dumps(r) + "\n")
    rows = summarize(results)
    print()
    mode = "tuning (validation only)" if args.tune else "test"
    print(f"{ds['benchmark']}, CPU ({os.cpu_count()} cores), {mode}")
    print_table(rows)
    print()
    print_markdown(rows)
    if args.plot:
        print(f"[compare] plot: {plot(rows, args.plot, ds['benchmark'])}")
    print(json.dumps({"benchmark": ds["benchmark"], "tune": args.tune, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    sys.exit(main())
