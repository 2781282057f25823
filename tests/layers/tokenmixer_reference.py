"""Plain NumPy references of the TokenMixer-Large formulas.

Everything here is written from the formulas (loops over tokens, explicit heads), not from the
layers' code, so the layer tests compare two independent implementations. The set-ups and
checks the layer tests share are in `layer_checks.py`.
"""

from __future__ import annotations

import math

import numpy as np
from helpers import to_numpy

_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def swiglu(x, gate_up, gate_up_bias, down, down_bias):
    """One token's SwiGLU: `down (Swish(x W_g + b_g) * (x W_u + b_u)) + b_down`.

    `gate_up` is `(D, 2H)`: columns `[:H]` gate, `[H:]` up.
    """
    hidden = gate_up.shape[-1] // 2
    z = x @ gate_up + (0 if gate_up_bias is None else gate_up_bias)
    out = (silu(z[..., :hidden]) * z[..., hidden:]) @ down
    return out + (0 if down_bias is None else down_bias)


def per_token(fn, x, *weights, shared=False):
    """Apply `fn(x_t, *weights_t)` token by token (weights indexed by t unless shared)."""
    out = []
    for t in range(x.shape[1]):
        ws = weights if shared else [None if w is None else w[t] for w in weights]
        out.append(fn(x[:, t], *ws))
    return np.stack(out, axis=1)


def swiglu_layer(layer, x):
    """NumPy output of a `PerTokenSwiGLU` from its weights."""
    ws = [
        None if w is None else to_numpy(w)
        for w in (layer.gate_up_kernel, layer.gate_up_bias, layer.down_kernel, layer.down_bias)
    ]
    return per_token(swiglu, x, *ws, shared=layer.shared)


def gelu_ffn_layer(layer, x):
    """NumPy output of a `PerTokenFFN` (GELU) from its weights."""

    def ffn(v, k1, b1, k2, b2):
        return gelu(v @ k1 + b1) @ k2 + b2

    ws = [to_numpy(w) for w in (layer.kernel_1, layer.bias_1, layer.kernel_2, layer.bias_2)]
    return per_token(ffn, x, *ws, shared=layer.shared)


def rms_norm(x, scale, eps):
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * scale


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps) * gamma + beta


def mix(x, heads):
    """RankMixer Eqs. 3-5: output token h is the concatenation over t of head h of x_t."""
    batch, tokens, dim = x.shape
    w = dim // heads
    out = np.zeros((batch, heads, tokens * w), x.dtype)
    for h in range(heads):
        out[:, h] = np.concatenate([x[:, t, h * w : (h + 1) * w] for t in range(tokens)], -1)
    return out


def revert(m, tokens):
    """Inverse of `mix`: token t is the concatenation over heads h of piece t of m_h.

    That is `mix` of the H mixed tokens with T heads: piece t of every m_h gathered into
    token t (`test_token_mixing_with_t_heads_reverts_any_h` checks that it inverts `mix`).
    """
    return mix(m, tokens)


def top_k_softmax(logits, k):
    """Softmax over the k largest logits of each row, zero elsewhere (ties: lowest index)."""
    gates = np.zeros_like(logits)
    flat_logits, flat_gates = (
        logits.reshape(-1, logits.shape[-1]),
        gates.reshape(-1, logits.shape[-1]),
    )
    for i, row in enumerate(flat_logits):
        top = np.argsort(-row, kind="stable")[:k]
        e = np.exp(row[top] - row[top].max())
        flat_gates[i, top] = e / e.sum()
    return flat_gates.reshape(logits.shape)


def moe_gates(layer, x):
    """Router logits and top-k softmax gates `(B, T, E)` of a `TokenMixerMoE`."""
    kernel, bias = to_numpy(layer.router.router_kernel), to_numpy(layer.router.router_bias)
    logits = np.einsum("btd,tde->bte", x, kernel) + bias
    return logits, top_k_softmax(logits, layer.top_k)


def moe_experts(layer, x):
    """Every routed expert's output `(B, T, E, D)` of a `TokenMixerMoE`."""
    gu, gub, dn, dnb = (
        None if w is None else to_numpy(w)
        for w in (
            layer.expert_gate_up_kernel,
            layer.expert_gate_up_bias,
            layer.expert_down_kernel,
            layer.expert_down_bias,
        )
    )
    out = np.zeros(x.shape[:2] + (layer.num_experts, x.shape[-1]), "float64")
    for t in range(x.shape[1]):
        for e in range(layer.num_experts):
            out[:, t, e] = swiglu(
                x[:, t],
                gu[t, e],
                None if gub is None else gub[t, e],
                dn[t, e],
                None if dnb is None else dnb[t, e],
            )
    return out


def moe_layer(layer, x, gates=None):
    """`alpha * sum_j g_j Expert_j(x) + Shared(x)` of a `TokenMixerMoE` (gates may be given)."""
    if gates is None:
        gates = moe_gates(layer, x)[1]
    out = layer.gate_scale_value * np.einsum("bte,bted->btd", gates, moe_experts(layer, x))
    if layer.shared_expert is not None:
        out = out + swiglu_layer(layer.shared_expert, x)
    return out
