"""Accuracy of reduced-precision dtype policies against float32.

Runs the same model (the fixture models of ../shared/fixtures, or the random
`original`-shape benchmark model) under the float32 policy and under
`mixed_bfloat16` / `mixed_float16`, and prints, per output, the largest absolute
difference, the relative error ||a - b|| / ||b|| and the smallest per-token
cosine similarity against float32.

    KERAS_BACKEND=jax python benchmarks/precision_check.py --model bilm-tf
    KERAS_BACKEND=tensorflow python benchmarks/precision_check.py --model original
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bilm-tf", help="bilm-tf, allennlp-elmo (fixtures) or original")
    parser.add_argument("--policies", default="mixed_bfloat16,mixed_float16")
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--fixtures", default=os.environ.get(
        "KERAS_ELMO_FIXTURES", str(HERE.parent.parent / "shared" / "fixtures")))
    args = parser.parse_args(argv)

    import keras

    import bench
    import keras_elmo

    if args.model == "original":
        options_file, weight_file = bench.model_files("original", Path(os.environ.get("KERAS_ELMO_BENCH_DIR", "/tmp")))
    else:
        folder = Path(args.fixtures) / args.model
        options_file, weight_file = folder / "options.json", folder / "lm_weights.hdf5"
    sentences = bench.make_corpus(26 * args.sentences, seed=3)[: args.sentences]
    ids = keras_elmo.char_ids(sentences)
    real = (ids != 0).any(-1)

    def run(policy):
        layer = keras_elmo.ELMoLayer.from_files(options_file, weight_file, output_mode="dict", dtype=policy)
        out = layer(ids)
        return {k: keras.ops.convert_to_numpy(keras.ops.cast(out[k], "float32"))
                for k in ("word_emb", "lstm_outputs2", "elmo")}

    want = run("float32")
    print(f"# backend {keras.backend.backend()}, model {args.model}, {len(sentences)} sentences, "
          f"{int(real.sum())} tokens; error against float32")
    print(f"{'policy':<16} {'output':<14} {'max abs':>9} {'rel. error':>11} {'min cosine':>11}")
    for policy in [p for p in args.policies.split(",") if p]:
        got = run(policy)
        for key, b in want.items():
            a = got[key][real]
            b = b[real]
            cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)
            print(f"{policy:<16} {key:<14} {np.abs(a - b).max():>9.2e} "
                  f"{np.linalg.norm(a - b) / np.linalg.norm(b):>11.2e} {cosine.min():>11.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
