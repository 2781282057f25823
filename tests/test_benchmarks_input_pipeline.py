"""benchmarks/input_pipeline.py on a tiny config: both engines read the same rows, the JSON
line carries rows/s per engine, format, width, thread count and repeat, the interleaved speed-up,
the training step's samples/s and the load average."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import input_pipeline  # noqa: E402


def test_input_pipeline_benchmark_tiny(capsys):
    input_pipeline.main(
        "--rows 200 --rounds 1 --threads 1 --widths frappe census --formats csv tfrecord "
        "--train-steps 1 --train-jit off --batch-size 64 --block-rows 128 --repeat 2".split()
    )
    out = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(out[-1])
    assert any(line.startswith("| data | format |") for line in out)
    results = payload["results"]
    assert {(r["format"], r["columns"]) for r in results} == {
        ("csv", 11), ("tfrecord", 11), ("csv", 41), ("tfrecord", 41)
    }  # fmt: skip
    for r in results:
        # --repeat 2: each timed pass reads the 200-row file twice through one iterator
        assert r["rows"] == 400 and r["repeat"] == 2 and r["threads"] == 1
        assert r["python_rows_per_s"] > 0 and r["native_rows_per_s"] > 0 and r["speedup"] > 0
        assert r["train_samples_per_s"] > 0 and r["train_preset"] == "tiny"
    assert len(payload["loadavg_before"]) == 3 and len(payload["loadavg_after"]) == 3


def test_input_stages_benchmark_tiny(capsys):
    from benchmarks import input_stages

    out = input_stages.main("--rows 3000 --rounds 2 --block-rows 512".split())
    stages = out["cpu_us_per_row"]
    assert list(stages) == ["read+split", "blocks", "blocks+cells", "native", "python"]
    assert all(v > 0 for v in stages.values())
    # each emulated stage does the previous one's work and more
    assert stages["read+split"] < stages["blocks+cells"] and stages["blocks"] < stages["native"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
