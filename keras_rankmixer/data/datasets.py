"""Named dataset schemas: Census-Income (KDD), the two-task set of the MMoE paper.

The raw release (`census-income.test.gz` in `../shared/data/census_income`, UCI, CC BY 4.0,
Kohavi and Becker 2000) has 42 comma-separated columns, no header, values with a leading
space and `?` for unknown. This module fixes everything a benchmark or the CLI needs:

- `CENSUS_COLUMNS`: the 42 raw columns, in file order.
- `census_features(embedding_dim=16)`: the 39 feature specs (7 `NumericFeature`, 32
  `CategoricalFeature` int64 ids), in semantic groups (person, work, money, household,
  migration, origin), the same signature style as `frappe_features`.
- Labels (`CENSUS_TASKS`): `income` = `income_50k` is `50000+.`, `never_married` =
  `marital_stat` is `Never married` (after stripping). `marital_stat` is then a label source,
  not a feature; `instance_weight` (a sampling weight) is dropped.
- The split by 0-based line index `i` (the data README): `i % 10` in 0..6 -> train, 7 ->
  valid, 8..9 -> test (69,834 / 9,976 / 19,952 rows of the 99,762).
- `prepare_census(src_gz, out_dir)` writes `train.csv`, `valid.csv`, `test.csv` (header: the 39
  features, then the 0/1 label columns `income,never_married`) that `read_arrays` and
  `rankmixer train --features census --labels income never_married` read. Categorical values
  become integer ids: the index of the stripped value in the sorted list of values seen in the
  **training** split (`vocabularies.json` in `out_dir` keeps the lists); `?` and values not
  seen in training become -1, the reserved missing/OOV slot. Numeric `?` would become an
  empty cell (NaN, the numeric embedding's learned "missing" vector; the release has none).
- `load_census(path)` returns `{"train": (features, labels), "valid": ..., "test": ...}` as
  dicts of NumPy arrays (via `read_arrays` on the prepared files, the same path the CLI takes);
  `path` is the raw `.gz` (prepared into a temporary directory) or a prepared directory.

The data and anything derived from it (the prepared CSVs, the vocabularies) stay out of the
repository: write them under `runs/` or another ignored directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from keras_rankmixer.features import Feature

#: The 42 columns of the raw Census-Income (KDD) file, in order.
CENSUS_COLUMNS: tuple[str, ...] = (
    "age",
    "class_worker",
    "det_ind_code",
    "det_occ_code",
    "education",
    "wage_per_hour",
    "hs_college",
    "marital_stat",
    "major_ind_code",
    "major_occ_code",
    "race",
    "hisp_origin",
    "sex",
    "union_member",
    "unemp_reason",
    "full_or_part_emp",
    "capital_gains",
    "capital_losses",
    "stock_dividends",
    "tax_filer_stat",
    "region_prev_res",
    "state_prev_res",
    "det_hh_fam_stat",
    "det_hh_summ",
    "instance_weight",
    "mig_chg_msa",
    "mig_chg_reg",
    "mig_move_reg",
    "mig_same",
    "mig_prev_sunbelt",
    "num_emp",
    "fam_under_18",
    "country_father",
    "country_mother",
    "country_self",
    "citizenship",
    "own_or_self",
    "vet_question",
    "vet_benefits",
    "weeks_worked",
    "year",
    "income_50k",
)
#: The two tasks (label columns of the prepared files), as in Ma et al. (KDD 2018), group 1.
CENSUS_TASKS: tuple[str, ...] = ("income", "never_married")
#: Numeric features; `log1p` for the heavy-tailed money columns.
CENSUS_NUMERIC: dict[str, str | None] = {
    "age": None,
    "wage_per_hour": "log1p",
    "capital_gains": "log1p",
    "capital_losses": "log1p",
    "stock_dividends": "log1p",
    "num_emp": None,
    "weeks_worked": None,
}
#: Raw columns that are not features: the label sources and the sampling weight.
CENSUS_DROPPED: tuple[str, ...] = ("marital_stat", "income_50k", "instance_weight")
#: Semantic group of every feature (the RankMixer tokenizer concatenates groups in this order).
CENSUS_GROUPS: dict[str, tuple[str, ...]] = {
    "person": ("age", "sex", "race", "hisp_origin", "education", "hs_college", "vet_question"),
    "work": (
        "class_worker",
        "det_ind_code",
        "det_occ_code",
        "major_ind_code",
        "major_occ_code",
        "wage_per_hour",
        "union_member",
        "unemp_reason",
        "full_or_part_emp",
        "num_emp",
        "own_or_self",
        "weeks_worked",
        "vet_benefits",
    ),
    "money": ("capital_gains", "capital_losses", "stock_dividends", "tax_filer_stat"),
    "household": ("det_hh_fam_stat", "det_hh_summ", "fam_under_18"),
    "migration": (
        "region_prev_res",
        "state_prev_res",
        "mig_chg_msa",
        "mig_chg_reg",
        "mig_move_reg",
        "mig_same",
        "mig_prev_sunbelt",
        "year",
    ),
    "origin": ("country_father", "country_mother", "country_self", "citizenship"),
}
#: The 39 feature names, in the order of `census_features` (group by group).
CENSUS_FEATURES: tuple[str, ...] = tuple(n for names in CENSUS_GROUPS.values() for n in names)
#: Upper bound on the ids of every categorical field (the largest has 52 training values).
CENSUS_VOCABULARY_SIZE = 64
#: Rows of each split in the full release (99,762 lines).
CENSUS_SPLIT_ROWS = {"train": 69_834, "valid": 9_976, "test": 19_952}
SPLITS = ("train", "valid", "test")
_UNKNOWN = "?"


def census_split(line_index: int | np.ndarray):
    """The split of a 0-based line index: `i % 10` in 0..6 train, 7 valid, 8..9 test."""
    r = np.asarray(line_index) % 10
    out = np.where(r <= 6, "train", np.where(r == 7, "valid", "test"))
    return str(out) if out.ndim == 0 else out


def census_features(
    embedding_dim: int = 16, vocabulary_size: int = CENSUS_VOCABULARY_SIZE
) -> list[Feature]:
    """Specs for Census-Income's 39 feature fields (7 numeric, 32 categorical int64 ids).

    The ids are those `prepare_census` writes (index in the training split's sorted values,
    -1 for unknown); adapt the vocabularies from the training split with `adapt_vocabularies`
    (or the CLI's `--adapt-vocabulary`) for compact tables and the numeric mean/std.

    Example:

    >>> specs = census_features(embedding_dim=8)
    >>> len(specs), sum(f.kind == "numeric" for f in specs), specs[0].group
    (39, 7, 'person')
    """
    from keras_rankmixer.features import CategoricalFeature, NumericFeature

    specs: list[Feature] = []
    for group, names in CENSUS_GROUPS.items():
        for name in names:
            if name in CENSUS_NUMERIC:
                specs.append(
                    NumericFeature(
                        name,
                        transform=CENSUS_NUMERIC[name],
                        embedding_dim=embedding_dim,
                        group=group,
                    )
                )
            else:
                specs.append(
                    CategoricalFeature(
                        name,
                        vocabulary_size=vocabulary_size,
                        embedding_dim=embedding_dim,
                        group=group,
                    )
                )
    return specs


def _read_raw(src_gz: str):
    """The raw file as a DataFrame of stripped strings (42 columns)."""
    import pandas as pd

    df = pd.read_csv(
        src_gz,
        header=None,
        names=list(CENSUS_COLUMNS),
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        skipinitialspace=True,
        compression="gzip" if src_gz.endswith(".gz") else None,
    )
    return df.apply(lambda s: s.str.strip())


def census_labels(raw) -> dict[str, np.ndarray]:
    """0/1 int64 labels from raw (stripped) columns: `income` and `never_married`."""
    return {
        "income": (np.asarray(raw["income_50k"]) == "50000+.").astype("int64"),
        "never_married": (np.asarray(raw["marital_stat"]) == "Never married").astype("int64"),
    }


def prepare_census(src_gz: str, out_dir: str) -> dict[str, str]:
    """Split the raw file by line number and write `{train,valid,test}.csv` to `out_dir`.

    Returns `{split: path}`. See the module docstring for the file layout; every categorical
    column is coded by the training split's sorted values (`vocabularies.json`).

    Example (a two-line file: both lines land in the training split):

    >>> import gzip, os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> row = ["1"] * 42
    >>> row[7], row[41] = "Never married", "50000+."
    >>> with gzip.open(os.path.join(d, "c.gz"), "wt") as f:
    ...     _ = f.write(", ".join(row) + "\\n" + ", ".join(row) + "\\n")
    >>> paths = prepare_census(os.path.join(d, "c.gz"), os.path.join(d, "out"))
    >>> open(paths["train"]).read().splitlines()[1].split(",")[-2:]
    ['1', '1']
    """
    raw = _read_raw(src_gz)
    split = census_split(np.arange(len(raw)))
    labels = census_labels(raw)
    train = split == "train"
    vocabularies: dict[str, list[str]] = {}
    out = {}
    for name in CENSUS_FEATURES:
        col = raw[name].to_numpy().astype(str)
        unknown = col == _UNKNOWN
        if name in CENSUS_NUMERIC:
            out[name] = np.where(unknown, "", col)
            continue
        vocab = sorted(set(col[train & ~unknown].tolist()))
        vocabularies[name] = vocab
        index = {v: i for i, v in enumerate(vocab)}
        out[name] = np.array([index.get(v, -1) for v in col], dtype="int64")
        out[name][unknown] = -1
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocabularies.json"), "w") as f:
        json.dump(vocabularies, f, indent=1)
    import pandas as pd

    frame = pd.DataFrame({**out, **labels})
    paths = {}
    for s in SPLITS:
        paths[s] = os.path.join(out_dir, f"{s}.csv")
        frame[split == s].to_csv(paths[s], index=False)
    return paths


def load_census(
    path: str,
    embedding_dim: int = 16,
    splits: Sequence[str] = SPLITS,
    cache_dir: str | None = None,
    specs: Sequence[Feature] | None = None,
) -> dict[str, tuple[dict, dict]]:
    """`{split: (features, labels)}` for the requested `splits` (dicts of NumPy arrays).

    Args:
        path: The raw `census-income.test.gz` (or a directory holding it), or a directory
            prepared by `prepare_census` (holding `train.csv`, ...).
        embedding_dim: Embedding width of the specs used to read (irrelevant to the arrays).
        splits: Which splits to read; tuning passes `("train", "valid")` and the test file is
            then never read.
        cache_dir: Where to prepare the raw file; None uses a temporary directory that is
            removed afterwards.
        specs: Feature specs to read with (default `census_features(embedding_dim)`).

    Labels are `{"income": int64 0/1, "never_married": int64 0/1}`.
    """
    from keras_rankmixer.data.sources import read_arrays

    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split(s) {bad}; expected some of {list(SPLITS)}.")
    specs = list(specs) if specs is not None else census_features(embedding_dim)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "train.csv")):
        return {
            s: _as_pair(read_arrays(os.path.join(path, f"{s}.csv"), specs, CENSUS_TASKS))
            for s in splits
        }
    src = os.path.join(path, "census-income.test.gz") if os.path.isdir(path) else path
    if not os.path.exists(src):
        raise FileNotFoundError(f"no Census-Income file at {src!r}.")
    if cache_dir is not None:
        prepare_census(src, cache_dir)
        return load_census(cache_dir, embedding_dim, splits, specs=specs)
    with tempfile.TemporaryDirectory(prefix="census_") as tmp:
        prepare_census(src, tmp)
        return load_census(tmp, embedding_dim, splits, specs=specs)


def _as_pair(result) -> tuple[dict, dict]:
    return result.features, result.labels


# ---------------------------------------------------------------------------------------------
# Frappe_x1 and the raw Criteo layout.


#: Column names of the raw Criteo layout (label, 13 integer counts, 26 hashed categoricals).
CRITEO_COLUMNS: tuple[str, ...] = (
    ("label",) + tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))
)
#: Column names of Frappe_x1 (BARS): label and 10 categorical fields (integer ids).
FRAPPE_COLUMNS: tuple[str, ...] = (
    "label",
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)


def frappe_features(embedding_dim: int = 10, vocabulary_size: int = 5500) -> list[Feature]:
    """Specs for Frappe_x1's 10 categorical fields (integer ids), one semantic group each.

    The BARS files number all fields' values in one id space (below 5500); adapt the
    vocabularies from the training split with `adapt_vocabularies` to get compact tables.
    """
    from keras_rankmixer.features import CategoricalFeature

    groups = {"user": "user", "item": "item"}
    return [
        CategoricalFeature(
            name,
            vocabulary_size=vocabulary_size,
            embedding_dim=embedding_dim,
            group=groups.get(name, name),
        )
        for name in FRAPPE_COLUMNS[1:]
    ]


def criteo_features(
    embedding_dim: int = 16, num_hash_bins: int = 100_000
) -> tuple[list[Feature], list[str]]:
    """Specs for the raw Criteo layout and the list of columns to hash.

    I1-I13 are `NumericFeature(transform="log1p")` (adapt mean/std on the training split);
    C1-C26 are hex strings, hashed in the reader (`hash_columns`) to int64 ids and declared
    `CategoricalFeature(num_hash_bins=...)` int64, so the model stays XLA-compilable.
    """
    from keras_rankmixer.features import CategoricalFeature, NumericFeature

    numeric = [
        NumericFeature(c, transform="log1p", embedding_dim=embedding_dim, group="dense")
        for c in CRITEO_COLUMNS[1:14]
    ]
    cats = [
        CategoricalFeature(
            c, num_hash_bins=num_hash_bins, embedding_dim=embedding_dim, group="sparse"
        )
        for c in CRITEO_COLUMNS[14:]
    ]
    return numeric + cats, list(CRITEO_COLUMNS[14:])
