"""Named backbone configurations, as data: backbone name + config + description + counts.

Each `BackbonePreset` names a registered backbone (`models.backbone.get_backbone_class`),
the constructor arguments of its size (everything but the feature specs), a one-line
description, and the parameter and FLOP counts of its blocks, stated here and checked
against the backbone class's `block_counts(**config)` (for RankMixer,
`keras_rankmixer.flops.count_config`) by the tests (`tests/models/test_presets.py`).
A preset whose token count the features decide (`num_tokens=None`: the group tokenizer makes
one token per feature group plus a global token) states its counts at a reference T,
`BackbonePreset.count_tokens` (the table shows T as "groups + 1" and the counts as "... (T=8)");
`count_model` on a built model gives the numbers at the data's T.
The README's preset table is `preset_table()` verbatim (also tested); after changing a preset,
paste the output of `python -m keras_rankmixer.models.presets` into the README.

Block parameters follow Eq. 12, `2 * L * T * D * H_ffn`, plus the FFN biases and the two
LayerNorms per block; the tokenizer and towers depend on the features and tasks and are not
included. `H_ffn` is chosen as a multiple of 128 (tensor-core friendly) that brings the block
count within 10% of the paper's figures. Head width D/T is 48 in both published configs, as
in the paper.

`PRESETS` (`{name: config}`) and `get_preset(name)` (a copy of the config) are the plain-dict
view that `build_rankmixer(**get_preset(name))` and `count_config` callers use.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class BackbonePreset:
    """One named configuration of a registered backbone.

    Attributes:
        name: Preset name.
        backbone: Registry name of the backbone class (`register_backbone`).
        config: Constructor arguments other than `features`.
        description: One line for tables and `--help`.
        block_params: Parameters of the blocks (Eq. 12 plus biases and LayerNorms), at
            `count_tokens` tokens if the config's `num_tokens` is None.
        block_flops_per_sample: Forward matmul FLOPs of the blocks per example (idem).
        paper_params: The paper's dense-parameter figure for this size, if it has one.
        task: Arguments of the task built on it (`Ranker`: `tower_units`,
            `tower_batch_norm`, `tower_dropout`, ...) that `Ranker.from_preset`,
            `build_from_preset` and `rankmixer train` use unless given; empty: the task's
            own defaults.
        count_tokens: The reference T of the stated counts when the features decide T
            (`config["num_tokens"]` None, e.g. the group tokenizer: groups + 1); None when the
            config fixes T. `count_config()` is the config the counts are of.
    """

    name: str
    backbone: str
    config: Mapping[str, Any]
    description: str
    block_params: int
    block_flops_per_sample: int
    paper_params: float | None = None
    task: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    count_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", types.MappingProxyType(dict(self.config)))
        object.__setattr__(self, "task", types.MappingProxyType(dict(self.task)))
        data_tokens = "num_tokens" in self.config and self.config["num_tokens"] is None
        if data_tokens != (self.count_tokens is not None):
            raise ValueError(
                f"preset {self.name!r}: `count_tokens` (the reference T of the stated counts) "
                "is given exactly when the config's `num_tokens` is None, got "
                f"num_tokens={self.config.get('num_tokens')!r}, count_tokens={self.count_tokens!r}."
            )

    def count_config(self) -> dict:
        """The config the stated counts are of: `config`, with `num_tokens=count_tokens`
        where the features decide T (`block_counts(**preset.count_config())` gives them).

        Example:

        >>> get_backbone_preset("tokenmixer_large_base").count_config()["num_tokens"]
        8
        """
        config = dict(self.config)
        if self.count_tokens is not None:
            config["num_tokens"] = self.count_tokens
        return config


#: The validated head (benchmarks/RESULTS.md, issue #18): BARS' MLP as each task's tower.
VALIDATED_TOWER: Mapping[str, Any] = types.MappingProxyType(
    {"tower_units": (400, 400, 400), "tower_batch_norm": True, "tower_dropout": 0.2}
)


def _preset(
    name: str,
    backbone: str,
    shape: tuple[int | None, int, int, float],
    counts: tuple[int, int],
    description: str,
    paper_params: float | None = None,
    task: Mapping[str, Any] | None = None,
    count_tokens: int | None = None,
    **config: Any,
) -> BackbonePreset:
    """A `BackbonePreset` of `shape` = (T, D, L, k) (`num_tokens`, `token_dim`, `num_layers`,
    `hidden_ratio`, first in its config, then `config`; T None: the features decide it);
    `counts` = (block params, block FLOPs per example), at `count_tokens` tokens if T is None."""
    keys = ("num_tokens", "token_dim", "num_layers", "hidden_ratio")
    return BackbonePreset(
        name=name,
        backbone=backbone,
        config={**dict(zip(keys, shape, strict=True)), **config},
        description=description,
        block_params=counts[0],
        block_flops_per_sample=counts[1],
        paper_params=paper_params,
        task=task or {},
        count_tokens=count_tokens,
    )


BACKBONE_PRESETS: dict[str, BackbonePreset] = {
    p.name: p
    for p in (
        _preset("tiny", "rankmixer", (4, 32, 2, 2), (33_792, 65_536), "Tests, demos and CPU runs."),
        # What validation favoured on Census-Income and Frappe_x1 (benchmarks/RESULTS.md,
        # "Defaults: what validation favours", #18): L=1, flatten pooling, the regularised
        # tower, embedding L2 0.01. The default of `rankmixer train --model rankmixer`.
        _preset(
            "rankmixer_base", "rankmixer", (8, 64, 1, 4), (264_960, 524_288),
            "The validated default of `rankmixer train` (Census-Income, Frappe_x1): flatten "
            "pooling, towers (400, 400, 400) + batch norm + dropout 0.2, embedding L2 0.01.",
            task=VALIDATED_TOWER, pooling="flatten", embedding_l2=0.01,
        ),
        _preset("small", "rankmixer", (16, 192, 2, 4), (9_469_440, 18_874_368),
                "A single-GPU model for public datasets."),
        # The paper's two published sizes: FFN hidden h = hidden_dim, k = h / D.
        *(
            _preset(f"rankmixer_{size}", "rankmixer", (t, d, 2, h / d), counts,
                    f"The paper's RankMixer-{size.upper()}.", paper, hidden_dim=h)
            for size, t, d, h, counts, paper in (
                ("100m", 16, 768, 2176, (107_055_104, 213_909_504), 107e6),
                ("1b", 32, 1536, 5632, (1_107_767_296, 2_214_592_512), 1.1e9),
            )
        ),
        # TokenMixer-Large's default for `rankmixer train --model tokenmixer_large` (#18): the
        # group-tokenizer config, chosen over slice tokens on Census-Income validation and the
        # held-out synthetic set (the figures: benchmarks/RESULTS.md). One MLP token per
        # feature group plus a global token: T = groups + 1, decided by the features, so the
        # counts are stated at a reference T = 8 (7 groups + global; `count_tokens`).
        _preset(
            "tokenmixer_large_base", "tokenmixer_large", (None, 64, 2, 2), (796_928, 1_572_864),
            "The default of `rankmixer train --model tokenmixer_large`: group tokenizer (one "
            "token per feature group + a global token, so T = groups + 1, set by the features; "
            "counts at T=8), H=8 heads, pSwiGLU n=2, flatten read-out, towers (400, 400, 400) "
            "+ batch norm + dropout 0.2, embedding L2 0.01.",
            task=VALIDATED_TOWER, count_tokens=8, tokenizer="group", num_heads=8,
            readout="flatten", embedding_l2=0.01,
        ),
        # TokenMixer-Large (#18): RankMixer's published (T, D) (head width D/T = 48 at 100M
        # and 1B, H = T) and budgets, L = 4 blocks (one inter-residual and one auxiliary
        # read-out, after block 1), pSwiGLU hidden h a multiple of 128 bringing the blocks
        # (2 banks x T x (3Dh + 2h + D) + 2D per block) within 10% of 9.5M / 107M / 1.1B.
        # Shared-MLP tokenizer (T does not depend on the feature groups) and mean read-out.
        # Counts: `models.tokenmixer_large_backbone.block_counts` (tested against the layers).
        *(
            _preset(f"tokenmixer_large_{size}", "tokenmixer_large", (t, d, 4, h / d), counts,
                    f"TokenMixer-Large at RankMixer-{like}'s shape and size.",
                    tokenizer="shared_mlp", readout="mean")
            for size, like, t, d, h, counts in (
                ("small", "small", 16, 192, 128, (9_496_064, 18_874_368)),
                ("100m", "100M", 16, 768, 384, (113_448_960, 226_492_416)),
                ("1b", "1B", 32, 1536, 896, (1_057_828_864, 2_113_929_216)),
            )
        ),
    )
}  # fmt: skip

#: `{name: config}` of the RankMixer presets (the plain-dict view; a copy of the data).
PRESETS: dict[str, dict] = {
    name: dict(p.config) for name, p in BACKBONE_PRESETS.items() if p.backbone == "rankmixer"
}


def preset_names(backbone: str | None = None) -> list[str]:
    """Preset names, sorted; only those of one registered backbone if `backbone` is given.

    Example:

    >>> preset_names("rankmixer")
    ['rankmixer_100m', 'rankmixer_1b', 'rankmixer_base', 'small', 'tiny']
    """
    return sorted(n for n, p in BACKBONE_PRESETS.items() if backbone in (None, p.backbone))


def get_backbone_preset(name: str) -> BackbonePreset:
    """The `BackbonePreset` named `name`; `ValueError` listing the presets if unknown."""
    if name not in BACKBONE_PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {preset_names()}.")
    return BACKBONE_PRESETS[name]


def get_preset(name: str) -> dict:
    """A copy of the preset's config dict; `ValueError` listing the presets if unknown.

    Example:

    >>> get_preset("tiny")
    {'num_tokens': 4, 'token_dim': 32, 'num_layers': 2, 'hidden_ratio': 2}
    """
    return dict(get_backbone_preset(name).config)


def _human(n: float) -> str:
    """17_000 -> '17K', 9_469_440 -> '9.5M', 107_055_104 -> '107.1M', 1.1e9 -> '1.1B'."""
    for scale, suffix, digits in ((1e9, "B", 3), (1e6, "M", 1), (1e3, "K", 1)):
        if n >= scale:
            text = f"{n / scale:.{digits}f}".rstrip("0").rstrip(".")
            return text + suffix
    return str(int(n))


def preset_table() -> str:
    """The Markdown table of the presets (the README holds it verbatim).

    Example:

    >>> print(preset_table().splitlines()[2])
    | `tiny` | rankmixer | 4 | 32 | 2 | 64 (2) | 33.8K | 65.5K | Tests, demos and CPU runs. |
    """
    from keras_rankmixer.layers.per_token_ffn import resolve_hidden_dim

    rows = [
        "| preset | backbone | T | D | L | FFN hidden (k) | block params | block FLOPs/example "
        "| description |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(BACKBONE_PRESETS.values(), key=lambda p: (p.backbone, p.block_params))
    for p in order:
        c = p.config
        if "token_dim" in c:  # a token-based backbone: its FFN width and ratio
            hidden = resolve_hidden_dim(
                c["token_dim"], c.get("hidden_ratio", 4), c.get("hidden_dim")
            )
            ratio = f"{hidden / c['token_dim']:.2f}".rstrip("0").rstrip(".")
            ffn = f"{hidden} ({ratio})"
        else:
            ffn = "-"
        params, flops = _human(p.block_params), _human(p.block_flops_per_sample)
        if p.paper_params:
            params += f" (paper: {_human(p.paper_params)})"
        cells = [c.get(k, "-") for k in ("num_tokens", "token_dim", "num_layers")]
        if p.count_tokens is not None:  # the features decide T: counts at the reference T
            cells[0] = "groups + 1" if c.get("global_token", True) else "groups"
            params, flops = (f"{x} (T={p.count_tokens})" for x in (params, flops))
        rows.append(
            f"| `{p.name}` | {p.backbone} | {' | '.join(map(str, cells))} | {ffn} | {params} | "
            f"{flops} | {p.description} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # python -m keras_rankmixer.models.presets: the README's table
    print(preset_table())
