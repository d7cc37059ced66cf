"""The benchmark script still runs and reports what issue 3 asks for (never timed here:
speed and memory are judged by running `benchmarks/bench.py` itself)."""

import json
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import bench  # noqa: E402
from keras_elmo.options import ELMoOptions  # noqa: E402


def test_corpus_is_deterministic_and_realistic():
    corpus = bench.make_corpus(3000)
    assert corpus == bench.make_corpus(3000)
    lengths = [len(s) for s in corpus]
    assert min(lengths) >= 5 and max(lengths) <= 60
    assert 20 <= sum(lengths) / len(lengths) <= 30


def test_flops_per_token_of_the_original_model():
    flops = bench.flops_per_token(ELMoOptions.from_dict(bench.MODELS["original"]))
    # Issue 3's breakdown: char CNN 18, highway 34, projection 2, LSTM 151 MFLOP.
    parts = {k: v / 1e6 for k, v in flops.items()}
    assert round(parts["char_cnn"]) == 18 and round(parts["highway"]) == 34
    assert round(parts["projection"]) == 2 and round(parts["lstm"]) == 151


def test_quick_run_writes_a_report(tmp_path, capsys):
    out = tmp_path / "result.json"
    assert bench.main(["--quick", "--model", "small", "--workdir", str(tmp_path), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["matmul_gflops"]["best"] > 0
    rows = {(r["path"], str(r["batch"])) for r in record["results"]}
    assert ("call", "1") in rows and ("call", "32") in rows
    assert all(r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in record["results"])
    assert "tok/s" in capsys.readouterr().out
    call_rows = [r for r in record["results"] if r["path"] == "call"]
    assert all(r["ceiling_tokens_per_s"] > 0 for r in call_rows)
    for r in call_rows:  # the ceiling's matmul fraction: the measured one's, scaled
        scaled = r["matmul_fraction"] * r["ceiling_tokens_per_s"] / r["tokens_per_s"]
        assert r["ceiling_matmul_fraction"] == pytest.approx(scaled, rel=1e-2)


def test_ceiling_counts_every_recurrent_step_and_the_rest_at_the_matmul_rate():
    options = ELMoOptions.from_dict(bench.MODELS["small"])
    flops = bench.flops_per_token(options)
    # Two sentences of 3 and 1 tokens run 4 and 2 steps (<S> and the tokens forward; a
    # stateless call skips each direction's last step), so steps 0-1 run 2 rows and
    # steps 2-3 run 1, in 2 directions x 2 layers.
    batch = [["a", "b", "a"], ["c"]]
    step_s = {1: 0.001, 2: 0.003, 4: 0.005}
    recurrent = 4 * (2 * 0.003 + 2 * 0.001)
    gate_flops = 2 * 2 * 128 * 4 * 1024  # one layer's, both directions (width 128, 4 x 1024 gates)
    # Per distinct token (3, <S>, </S>): encoder and layer 0's gates; per step and row: layer 1's.
    other = 5 * (flops["char_cnn"] + flops["highway"] + flops["projection"] + gate_flops) + 6 * gate_flops
    want = 4 / (recurrent + other / 100e9)
    got = bench.ceiling_tokens_per_s(options, [batch], flops, 100.0, step_s)
    assert abs(got - want) < 1e-9 * want
    # 3 rows, between the measured 2 and 4, take 0.004 s per step (interpolated).
    got = bench.ceiling_tokens_per_s(options, [[["a"] * 3] * 3], flops, 100.0, step_s)
    other = 3 * (flops["char_cnn"] + flops["highway"] + flops["projection"] + gate_flops) + 12 * gate_flops
    want = 9 / (4 * 4 * 0.004 + other / 100e9)
    assert abs(got - want) < 1e-9 * want


def test_gate_flops_split_by_layer_add_up():
    parts = bench.lstm_flops(ELMoOptions.from_dict(bench.MODELS["original"]))
    assert parts["first"] == parts["later"] == 2 * 2 * 512 * 4 * 4096
    assert parts["inputs"] == parts["first"] + parts["later"]
