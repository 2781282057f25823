"""Named RankMixer configurations (plain dicts, not code).

Dense (block) parameters follow Eq. 12, `2 * L * T * D * H_ffn` (plus biases and LayerNorms);
`H_ffn` is chosen as a multiple of 128 (tensor-core friendly) that brings the dense count
within 10% of the paper's figures:

| preset | T | D | L | H_ffn (k) | block params | paper |
|---|---|---|---|---|---|---|
| tiny | 4 | 32 | 2 | 64 (k=2) | ~17K | - |
| small | 16 | 192 | 2 | 768 (k=4) | ~9.5M | - |
| rankmixer_100m | 16 | 768 | 2 | 2176 (k=2.83) | ~107.1M | 107M |
| rankmixer_1b | 32 | 1536 | 2 | 5632 (k=3.67) | ~1.108B | 1.1B |

Head width D/T is 48 in both published configs, as in the paper.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "tiny": {"num_tokens": 4, "token_dim": 32, "num_layers": 2, "hidden_ratio": 2},
    "small": {"num_tokens": 16, "token_dim": 192, "num_layers": 2, "hidden_ratio": 4},
    "rankmixer_100m": {
        "num_tokens": 16,
        "token_dim": 768,
        "num_layers": 2,
        "hidden_ratio": 2176 / 768,
        "hidden_dim": 2176,
    },
    "rankmixer_1b": {
        "num_tokens": 32,
        "token_dim": 1536,
        "num_layers": 2,
        "hidden_ratio": 5632 / 1536,
        "hidden_dim": 5632,
    },
}


def get_preset(name: str) -> dict:
    """A copy of the preset's config dict; `ValueError` listing the presets if unknown."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}.")
    return dict(PRESETS[name])
