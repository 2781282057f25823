"""The Frappe benchmarks without the data: they skip cleanly, and the summary groups runs by
model, config and regularisation (mean and std over seeds)."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import frappe, moe_frappe  # noqa: E402


def test_frappe_skips_without_data(tmp_path, capsys):
    assert frappe.main(["--data-dir", str(tmp_path / "absent")]) == 0
    out = capsys.readouterr().out
    assert "SKIPPED" in out and "may not be redistributed" in out
    assert json.loads(out.strip().splitlines()[-1]) == {"benchmark": "frappe_x1", "skipped": True}


def test_moe_frappe_skips_without_data(tmp_path, capsys):
    assert moe_frappe.main(["--data", str(tmp_path / "absent")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["skipped"] == "no data"


def _run(model, seed, auc, l2=0.01, config=None, **settings):
    return {
        "model": model,
        "seed": seed,
        "config": config or {"num_tokens": 5, "token_dim": 40},
        "params": 10,
        "train_seconds": 1.0,
        "epochs": 3,
        "valid_auc": auc + 0.001,
        "test_auc": auc,
        "test_logloss": 0.2,
        "settings": {"embedding_l2": l2, "dropout": 0.0, **settings},
    }


def test_summary_groups_by_model_config_and_regularisation():
    runs = [
        _run("rankmixer", 0, 0.97),
        _run("rankmixer", 1, 0.98),
        _run("rankmixer", 1, 0.98),  # the same run recorded twice counts once
        _run("rankmixer", 0, 0.90, l2=0.05),
        _run("rankmixer", 0, 0.91, tokenizer_l2=0.1),
        _run("dnn", 0, 0.95, config={"hidden_units": [4]}),
        _run("dnn", 1, 0.96, config={"hidden_units": [4]}, tokenizer_l2=0.1),  # no tokenizer
    ]
    rows = {(r["model"], r["settings"]): r for r in frappe.summarize(runs)}
    assert set(rows) == {
        ("rankmixer", "l2=0.01 dropout=0"),
        ("rankmixer", "l2=0.05 dropout=0"),
        ("rankmixer", "l2=0.01 tokenizer_l2=0.1 dropout=0"),
        ("dnn", "l2=0.01"),
    }
    assert rows[("dnn", "l2=0.01")]["seeds"] == 2
    main = rows[("rankmixer", "l2=0.01 dropout=0")]
    assert main["seeds"] == 2
    assert main["test_auc_mean"] == pytest.approx(0.975)
    assert main["test_auc_std"] == pytest.approx(np.std([0.97, 0.98]))
    assert rows[("rankmixer", "l2=0.05 dropout=0")]["test_auc_mean"] == pytest.approx(0.90)


def test_runs_that_differ_only_in_the_tower_are_separate_rows(capsys):
    base = {"num_tokens": 5, "token_dim": 40, "num_layers": 2, "hidden_ratio": 4}
    tower = dict(base, tower_units=[400, 400], tower_batch_norm=True, tower_dropout=0.2)
    relu = dict(tower, tower_activation="relu")
    rows = frappe.summarize(
        [
            _run("rankmixer", 0, 0.97, config=base),
            _run("rankmixer", 0, 0.98, config=tower),
            _run("rankmixer", 0, 0.96, config=relu),
        ]
    )
    assert len(rows) == 3
    frappe.print_markdown(rows)
    out = capsys.readouterr().out
    assert "| T=5 D=40 L=2 k=4 |" in out
    assert "| T=5 D=40 L=2 k=4, tower (400, 400) + BN + dropout 0.2 |" in out
    assert "| T=5 D=40 L=2 k=4, tower (400, 400) + BN + dropout 0.2 (relu) |" in out


def test_moe_fig3_curves_start_every_line_at_the_tagged_dense_runs():
    def row(method, frac, auc):
        return {"method": method, "fraction": frac, "test_auc": auc}

    cells = {
        ("dense_E32", 1.0): [row("dense_E32", 1.0, 0.97), row("dense_E32", 1.0, 0.972)],
        ("dtsi_E32", 0.25): [row("dtsi_E32", 0.25, 0.969), row("dtsi_E32", 0.25, 0.971)],
        ("topk_E32", 0.5): [row("topk_E32", 0.5, 0.968)],
    }
    curves, dense_auc = moe_frappe.fig3_curves(cells)
    assert dense_auc == pytest.approx(0.971)
    assert sorted(curves) == ["dtsi_E32", "topk_E32"]  # dense is not a line of its own
    frac, mean, std = zip(*curves["dtsi_E32"], strict=True)
    assert frac == (1.0, 0.25)
    np.testing.assert_allclose(mean, [0.971, 0.970])
    np.testing.assert_allclose(std, [np.std([0.97, 0.972], ddof=1), np.std([0.969, 0.971], ddof=1)])
    assert curves["topk_E32"] == [
        (1.0, pytest.approx(0.971), pytest.approx(std[0])),
        (0.5, 0.968, 0.0),
    ]


def test_moe_frappe_runs_tokenmixer_large_moe_sparse_and_dense():
    """`--methods tml`: TokenMixerMoE (top-k of E) in the same RankMixer, its sparse served path
    against every expert computed (the layer tests check that they agree when nothing is
    dropped). At a capacity below what the routing needs, selections are dropped: the harness
    must see the overflow and a served path that differs from the all-experts one."""
    import types

    from keras_rankmixer.data import FRAPPE_COLUMNS

    rng = np.random.default_rng(0)
    fields = FRAPPE_COLUMNS[1:]

    def split(n):
        x = {f: rng.integers(0, 5, n).astype("int64") for f in fields}
        return x, {"click": rng.integers(0, 2, (n, 1)).astype("float32")}

    data = {"train_reconstructed": split(256), "valid": split(128), "test": split(128)}
    args = types.SimpleNamespace(
        embedding_dim=4, num_tokens=2, token_dim=8, num_layers=1, hidden_ratio=4.0,
        num_experts=4, load_balance_weight=0.01, capacity_factor=0.5, learning_rate=3e-3,
        patience=1, batch_size=64, epochs=1, tag="", fig4="",
    )  # fmt: skip
    result = moe_frappe.run_one("tml", 0.5, 0, data, dict.fromkeys(fields, 5), args)
    assert result["method"] == "tml" and result["top_k"] == 2
    assert result["active_ratio"] == 0.5
    # capacity ceil(0.5 * 2/4 * 64) = 16 samples per token and expert, for 32 selections each
    # on average: at least half of them dropped
    assert result["overflow_ratio"] >= 0.5
    assert result["sparse_vs_dense_max_abs"] > 1e-3
    assert result["sparse_rows_per_s"] > 0 and result["dense_compute_rows_per_s"] > 0
