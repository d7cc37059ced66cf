"""The benchmark script still runs and reports what issue 3 asks for (never timed here:
speed and memory are judged by running `benchmarks/bench.py` itself)."""

import json
import sys

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
