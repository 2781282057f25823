"""Census-Income schema and loader (`keras_rankmixer.data.datasets`) on a tiny synthetic
release in tmp_path, and on the real file when ../shared/data has it (skipped otherwise)."""

import csv
import gzip
import json
import os

import numpy as np
import pytest

from keras_rankmixer.data import adapt_vocabularies, read_arrays
from keras_rankmixer.data.datasets import (
    CENSUS_COLUMNS,
    CENSUS_FEATURES,
    CENSUS_NUMERIC,
    CENSUS_SPLIT_ROWS,
    CENSUS_TASKS,
    census_features,
    census_split,
    load_census,
    prepare_census,
)

REAL = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "data", "census_income",
    "census-income.test.gz",
)  # fmt: skip


def _row(i: int) -> list[str]:
    """Raw line i: leading spaces as in the release, `?` in some columns."""
    row = {c: f"v{i % 3}" for c in CENSUS_COLUMNS}
    for c in CENSUS_NUMERIC:
        row[c] = str(i)
    row["instance_weight"] = "1234.5"
    row["marital_stat"] = "Never married" if i % 2 else "Married-civilian spouse present"
    row["income_50k"] = "50000+." if i % 4 == 0 else "- 50000."
    row["country_self"] = "?" if i % 5 == 0 else "United-States"
    row["class_worker"] = "only_in_test" if i == 9 else "Private"
    return [" " + row[c] for c in CENSUS_COLUMNS]


@pytest.fixture
def raw_gz(tmp_path):
    path = tmp_path / "census-income.test.gz"
    with gzip.open(path, "wt") as f:
        for i in range(30):
            f.write(",".join(_row(i)) + "\n")
    return str(path)


def test_schema_has_39_fields_and_no_label_sources():
    specs = census_features(embedding_dim=8)
    names = [f.name for f in specs]
    assert len(specs) == 39 == len(set(names)) and tuple(names) == CENSUS_FEATURES
    assert sum(f.kind == "numeric" for f in specs) == 7
    assert set(names) == set(CENSUS_COLUMNS) - {"marital_stat", "income_50k", "instance_weight"}
    assert all(f.embedding_dim == 8 for f in specs)
    by_name = {f.name: f for f in specs}
    assert by_name["capital_gains"].transform == "log1p" and by_name["age"].transform is None
    assert by_name["year"].kind == "categorical" and by_name["det_ind_code"].kind == "categorical"


def test_split_by_line_number():
    assert census_split(0) == "train" and census_split(6) == "train"
    assert census_split(7) == "valid" and census_split(18) == "test" and census_split(29) == "test"
    counts = {s: int(np.sum(census_split(np.arange(99_762)) == s)) for s in CENSUS_SPLIT_ROWS}
    assert counts == CENSUS_SPLIT_ROWS


def test_prepare_writes_split_files_with_labels_and_ids(raw_gz, tmp_path):
    out = tmp_path / "prepared"
    paths = prepare_census(raw_gz, str(out))
    rows = {s: list(csv.DictReader(open(p))) for s, p in paths.items()}
    assert [len(rows[s]) for s in ("train", "valid", "test")] == [21, 3, 6]
    header = list(rows["train"][0])
    assert header == [*CENSUS_FEATURES, "income", "never_married"]
    train_lines = [i for i in range(30) if i % 10 <= 6]
    assert [r["income"] for r in rows["train"]] == [str(int(i % 4 == 0)) for i in train_lines]
    assert [r["never_married"] for r in rows["train"]] == [str(i % 2) for i in train_lines]
    assert [r["age"] for r in rows["train"]] == [str(i) for i in train_lines]
    vocab = json.load(open(out / "vocabularies.json"))
    assert vocab["country_self"] == ["United-States"]  # "?" is not a value
    assert vocab["class_worker"] == ["Private"]  # built from the training split only
    # "?" and a value first seen outside training are the missing id -1
    assert [r["country_self"] for r in rows["train"]] == [
        "-1" if i % 5 == 0 else "0" for i in train_lines
    ]
    test_rows = dict(zip([i for i in range(30) if i % 10 >= 8], rows["test"], strict=True))
    assert test_rows[9]["class_worker"] == "-1" and test_rows[8]["class_worker"] == "0"


def test_load_reads_arrays_and_skips_the_test_split_on_request(raw_gz, tmp_path):
    data = load_census(raw_gz, embedding_dim=4)
    assert sorted(data) == ["test", "train", "valid"]
    x, y = data["train"]
    assert sorted(y) == sorted(CENSUS_TASKS) and y["income"].dtype == np.int64
    assert set(x) == set(CENSUS_FEATURES) and len(x["age"]) == 21
    assert np.isfinite(x["capital_gains"]).all() and x["country_self"].min() == -1
    tune = load_census(os.path.dirname(raw_gz), splits=("train", "valid"))
    assert sorted(tune) == ["train", "valid"]
    np.testing.assert_array_equal(tune["valid"][1]["income"], data["valid"][1]["income"])
    # a prepared directory reads the same, and adapted specs give compact vocabularies
    prepare_census(raw_gz, str(tmp_path / "p"))
    again = load_census(str(tmp_path / "p"))
    np.testing.assert_array_equal(again["test"][0]["class_worker"], data["test"][0]["class_worker"])
    specs = {f.name: f for f in adapt_vocabularies(census_features(), x)}
    assert specs["country_self"].vocabulary == (0,)
    assert specs["age"].mean == pytest.approx(np.mean([i for i in range(30) if i % 10 <= 6]))
    with pytest.raises(ValueError, match="unknown split"):
        load_census(raw_gz, splits=("train", "dev"))


def test_prepared_files_read_with_the_cli_schema(raw_gz, tmp_path):
    paths = prepare_census(raw_gz, str(tmp_path / "p"))
    result = read_arrays(paths["valid"], census_features(), label_columns=list(CENSUS_TASKS))
    assert result.report.rows_kept == 3 and result.report.skipped == {}


@pytest.mark.skipif(not os.path.exists(REAL), reason="Census-Income not in ../shared/data")
def test_real_file_split_and_label_rates(tmp_path):
    data = load_census(REAL, cache_dir=str(tmp_path / "census"))
    assert {s: len(y["income"]) for s, (_, y) in data.items()} == CENSUS_SPLIT_ROWS
    y = np.concatenate([data[s][1]["income"] for s in data])
    assert 0.060 < y.mean() < 0.064  # README: about 6.2% positive
    married = np.concatenate([data[s][1]["never_married"] for s in data])
    assert 0.42 < married.mean() < 0.44
    x = data["train"][0]
    assert max(int(x[f].max()) for f in CENSUS_FEATURES if f not in CENSUS_NUMERIC) < 64


def test_train_command_names_the_census_schema():
    from keras_rankmixer.training.runner import load_specs

    specs, hash_columns = load_specs({"features": "census"})
    assert [f.name for f in specs] == [f.name for f in census_features()]
    assert len(specs) == 39 and hash_columns == []
