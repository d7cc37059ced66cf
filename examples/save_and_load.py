"""Save a Keras model holding an ELMo layer as `.keras`, load it back, get the same outputs.

The ELMo layers (and their `ScalarMix`) are registered Keras serializables: once
`keras_elmo` is imported, `keras.saving.load_model` rebuilds them with no
`custom_objects`. The `.keras` file holds the options and every weight, biLM
included, so it loads without the original options/weight files (for the published
ELMo models that is a file of a few hundred MB).

The script builds a functional model with an `ELMoLayer(output_mode="dict")`: it
outputs the per-token ELMo vectors and a Dense head's scores on the sentence
vectors. It gives the ScalarMix non-default values (as training would), predicts,
saves to a temporary directory, loads, predicts again, prints the largest absolute
difference and exits with status 1 unless the predictions are identical.

Run it from the repository root (or with keras_elmo installed):

    python examples/save_and_load.py                          # TensorFlow (the default backend)
    KERAS_BACKEND=jax python examples/save_and_load.py
    KERAS_BACKEND=torch python examples/save_and_load.py
    python examples/save_and_load.py --options options.json --weights lm_weights.hdf5
    python examples/save_and_load.py --preset PRESET_NAME_OR_DIR

Without --options/--weights/--preset it uses a small randomly initialised ELMo and
says so; it runs offline in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from _common import add_model_args, check_model_args, keras_elmo, make_elmo, start  # first: makes keras_elmo importable

import keras
import numpy as np

SENTENCES = [
    "the cat sat on the mat .",
    "ELMo vectors depend on the whole sentence",
    "short",
    "",  # an empty sentence: a zero-length row
    "naïve café , déjà vu ?",
]


def build_model(elmo: keras.layers.Layer) -> keras.Model:
    """char ids -> {"elmo": [b, t, 2P] per-token vectors, "scores": [b, 2] from the sentence vector}."""
    ids = keras.Input(shape=(None, elmo.max_chars), dtype="int32", name="char_ids")
    outputs = elmo(ids)  # output_mode="dict"
    scores = keras.layers.Dense(2, name="scores")(outputs["default"])
    return keras.Model(ids, {"elmo": outputs["elmo"], "scores": scores}, name="elmo_model")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--quick", action="store_true", help="accepted for symmetry; this script is always quick")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_model_args(p, args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start(args)

    elmo = make_elmo(args, "its outputs are not meaningful for real use.", output_mode="dict", name="elmo")
    model = build_model(elmo)
    # Non-default mix weights, as after training, so that the check covers them too.
    mix = elmo.scalar_mix
    mix.scalar_weights.assign(np.linspace(1.0, -1.0, mix.num_layers).astype("float32"))
    mix.gamma.assign(0.75)

    ids = keras_elmo.char_ids([keras_elmo.tokenize(s) for s in SENTENCES], max_chars=elmo.max_chars)
    before = model.predict(ids, verbose=0)
    print(f"Predicted {len(SENTENCES)} sentences: " + ", ".join(f"{k} {v.shape}" for k, v in before.items()))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "elmo_model.keras")
        model.save(path)
        print(f"Saved {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
        # No custom_objects: importing keras_elmo registered its layers.
        loaded = keras.saving.load_model(path)
    loaded_elmo = loaded.get_layer("elmo")
    print(f"Loaded: {type(loaded_elmo).__module__}.{type(loaded_elmo).__name__}, "
          f"output_mode={loaded_elmo.output_mode!r}")
    after = loaded.predict(ids, verbose=0)

    ok = True
    for key in before:
        if before[key].shape != after[key].shape:
            print(f"  {key}: shape {before[key].shape} before, {after[key].shape} after (DIFFERENT)")
            ok = False
            continue
        diff = float(np.max(np.abs(before[key] - after[key]), initial=0.0))
        same = np.array_equal(before[key], after[key])
        print(f"  {key}: max abs difference {diff:.3g} ({'identical' if same else 'DIFFERENT'})")
        ok = ok and same
    if not ok:
        print("FAILED: the loaded model's predictions differ from the saved model's.")
        return 1
    print("OK: the loaded model predicts exactly what the saved model did.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
