"""A realistic, deterministic synthetic click log (the demo's default data).

Generative model (all draws from `numpy.random.default_rng(seed)`):

1. **Fields.** `num_categorical` categorical fields in three semantic groups (user, item,
   context), field i with vocabulary `V_i` (log-spaced between `min_vocab` and `max_vocab`).
   Ids are **Zipf-distributed**: `P(rank r) ~ 1 / r^zipf_a`, ranks mapped to ids by a fixed
   random permutation, so a few ids are very frequent and most are rare, as in real logs.
   A multi-valued field `history` holds up to `history_length` item ids (padded with -1), and
   `num_numeric` numeric fields are log-normal "counts" with 5% missing (NaN).
2. **Ground-truth click probability.** `logit = b + sum_i w_i[id_i]` (first-order effects,
   `w ~ N(0, 0.4^2)`) `+ sum_{(i,j) in crosses} <u_i[id_i], v_j[id_j]>` (second-order
   crosses between chosen field pairs, rank-4 factors `~ N(0, 0.5^2/4)`) `+ sum_k c_k z_k`
   `+ 0.5 * z_0 * w_0[id_0]` (a numeric x categorical cross) `+ <mean history factor,
   item factor>` (user-history/item affinity). `b` is set so the click rate is `ctr`.
3. **Labels.** `click ~ Bernoulli(sigmoid(logit))`. Optional second task `like`:
   `like = click * Bernoulli(sigmoid(logit_like))` with its own first-order weights, so it
   is rarer and correlated with clicks, as in the paper's finish/skip/like heads.

The generator also returns the true probabilities, so the Bayes-optimal AUC of the data is
known and a trained model can be compared with it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_rankmixer.features import (
    CategoricalFeature,
    Feature,
    NumericFeature,
    SequenceFeature,
    adapt_features,
)

_GROUPS = ("user", "item", "context")


@dataclasses.dataclass
class SyntheticClickData:
    """Features (dict of numpy arrays), labels (dict), specs, and the true click probability."""

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    specs: list[Feature]
    probabilities: dict[str, np.ndarray]

    def split(self, fraction: float) -> tuple[SyntheticClickData, SyntheticClickData]:
        """Split rows into the first `fraction` and the rest."""
        n = len(next(iter(self.labels.values())))
        cut = int(round(n * fraction))

        def part(sl):
            return SyntheticClickData(
                {k: v[sl] for k, v in self.features.items()},
                {k: v[sl] for k, v in self.labels.items()},
                self.specs,
                {k: v[sl] for k, v in self.probabilities.items()},
            )

        return part(slice(0, cut)), part(slice(cut, n))


def _zipf_ids(rng, vocab: int, size, a: float) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1) ** a
    ranks = rng.choice(vocab, size=size, p=p / p.sum())
    return rng.permutation(vocab)[ranks]


def make_click_data(
    num_samples: int = 100_000,
    seed: int = 0,
    num_categorical: int = 12,
    num_numeric: int = 4,
    min_vocab: int = 20,
    max_vocab: int = 20_000,
    history_length: int = 8,
    zipf_a: float = 1.1,
    ctr: float = 0.2,
    embedding_dim: int = 16,
    tasks: tuple[str, ...] = ("click",),
) -> SyntheticClickData:
    """Generate a synthetic click log; see the module docstring for the generative model.

    Example:

    >>> data = make_click_data(1000, seed=1)
    >>> sorted(data.labels), data.features["history"].shape
    (['click'], (1000, 8))
    """
    if num_samples < 1 or num_categorical < 2:
        raise ValueError("need num_samples >= 1 and num_categorical >= 2.")
    unknown = set(tasks) - {"click", "like"}
    if unknown or "click" not in tasks:
        raise ValueError(f"tasks must include 'click' and may add 'like'; got {tasks!r}.")
    rng = np.random.default_rng(seed)
    vocabs = np.unique(np.geomspace(min_vocab, max_vocab, num_categorical).astype(int)).tolist()
    while len(vocabs) < num_categorical:
        vocabs.append(vocabs[-1] + len(vocabs))
    specs: list[Feature] = []
    features: dict[str, np.ndarray] = {}
    logit = np.zeros(num_samples)
    rank = 4
    factors_u, factors_v, ids = [], [], []
    for i, vocab in enumerate(vocabs):
        group = _GROUPS[i % 3]
        name = f"{group}_c{i}"
        x = _zipf_ids(rng, vocab, num_samples, zipf_a)
        features[name] = x.astype("int64")
        ids.append(x)
        specs.append(
            CategoricalFeature(
                name, vocabulary_size=vocab, embedding_dim=embedding_dim, group=group
            )
        )
        logit += rng.normal(0, 0.4, vocab)[x]
        factors_u.append(rng.normal(0, 0.5 / np.sqrt(rank), (vocab, rank)))
        factors_v.append(rng.normal(0, 0.5 / np.sqrt(rank), (vocab, rank)))
    crosses = [(i, (i + 1) % num_categorical) for i in range(0, num_categorical, 2)]
    crosses += [(i, (i + 4) % num_categorical) for i in range(0, num_categorical, 3)]
    for i, j in crosses:
        logit += np.sum(factors_u[i][ids[i]] * factors_v[j][ids[j]], axis=1)

    item_field = 1  # the first "item" field; history holds ids of the same kind
    item_vocab = vocabs[item_field]
    lengths = rng.integers(0, history_length + 1, num_samples)
    history = _zipf_ids(rng, item_vocab, (num_samples, history_length), zipf_a)
    history = np.where(np.arange(history_length)[None, :] < lengths[:, None], history, -1)
    features["history"] = history.astype("int64")
    specs.append(
        SequenceFeature(
            "history",
            vocabulary_size=item_vocab,
            max_length=history_length,
            embedding_dim=embedding_dim,
            group="user",
        )
    )
    present = (history >= 0)[..., None]
    hist_f = (factors_u[item_field][np.maximum(history, 0)] * present).sum(1) / np.maximum(
        present.sum(1), 1
    )
    logit += 2.0 * np.sum(hist_f * factors_v[item_field][ids[item_field]], axis=1)

    first_order_0 = rng.normal(0, 0.4, vocabs[0])
    for k in range(num_numeric):
        raw = np.floor(rng.lognormal(mean=1.0 + k * 0.5, sigma=1.0, size=num_samples))
        z = (np.log1p(raw) - np.log1p(raw).mean()) / (np.log1p(raw).std() + 1e-9)
        logit += rng.normal(0, 0.3) * z
        if k == 0:
            logit += 0.5 * z * first_order_0[ids[0]]
        raw[rng.random(num_samples) < 0.05] = np.nan
        name = f"{_GROUPS[k % 3]}_n{k}"
        features[name] = raw.astype("float32")
        specs.append(
            NumericFeature(
                name, transform="log1p", embedding_dim=embedding_dim, group=_GROUPS[k % 3]
            )
        )

    logit += _solve_bias(logit, ctr)
    prob = 1.0 / (1.0 + np.exp(-logit))
    click = (rng.random(num_samples) < prob).astype("int64")
    labels = {"click": click}
    probabilities = {"click": prob}
    if "like" in tasks:
        like_logit = rng.normal(0, 0.5, vocabs[1])[ids[1]] + rng.normal(0, 0.5, vocabs[0])[ids[0]]
        like_logit += _solve_bias(like_logit, 0.3)
        like_prob = 1.0 / (1.0 + np.exp(-like_logit))
        labels["like"] = click * (rng.random(num_samples) < like_prob).astype("int64")
        probabilities["like"] = prob * like_prob
    specs = adapt_features(specs, features)
    return SyntheticClickData(features, labels, specs, probabilities)


def _solve_bias(logit: np.ndarray, rate: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(logit + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
