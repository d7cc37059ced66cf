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
import importlib.util
import os
import sys
import tempfile

try:
    import keras_elmo
except ModuleNotFoundError as e:  # running from a checkout without installing: use the repo root
    if e.name != "keras_elmo":
        raise
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_elmo

import keras
import numpy as np

#: A tiny model for offline runs (the same as in sentence_classifier.py).
TINY_OPTIONS = {
    "lstm": {
        "dim": 32,
        "projection_dim": 16,
        "n_layers": 2,
        "cell_clip": 3,
        "proj_clip": 3,
        "use_skip_connections": False,
    },
    "char_cnn": {
        "embedding": {"dim": 8},
        "filters": [[1, 8], [2, 8], [3, 16]],
        "n_highway": 1,
        "n_characters": 262,
        "max_characters_per_token": 50,
        "activation": "relu",
    },
}
OFFLINE_NOTICE = (
    "NOTE: no --options/--weights/--preset given: using a small randomly initialised ELMo; "
    "its outputs are not meaningful for real use."
)
SENTENCES = [
    "the cat sat on the mat .",
    "ELMo vectors depend on the whole sentence",
    "short",
    "",  # an empty sentence: a zero-length row
    "naïve café , déjà vu ?",
]


def make_elmo(args: argparse.Namespace, **kwargs) -> keras.layers.Layer:
    """The ELMo layer the flags ask for; prints which one it is."""
    if args.preset:
        if importlib.util.find_spec("keras_elmo.presets") is None:
            sys.exit(
                "error: --preset needs keras_elmo.presets, which this keras_elmo installation "
                f"({os.path.dirname(keras_elmo.__file__)}) does not have; use --options and "
                "--weights instead."
            )
        print(f"Loading ELMo preset {args.preset}")
        try:
            return keras_elmo.ELMoLayer.from_preset(args.preset, **kwargs)
        except (ValueError, OSError) as e:  # an unknown preset, a failed download, a bad directory
            sys.exit(f"error: could not load preset {args.preset!r}: {e}")
    if args.options:
        print(f"Loading ELMo from {args.options} and {args.weights}")
        return keras_elmo.ELMoLayer.from_files(args.options, args.weights, **kwargs)
    print(OFFLINE_NOTICE)
    return keras_elmo.ELMoLayer(options=TINY_OPTIONS, **kwargs)


def build_model(elmo: keras.layers.Layer) -> keras.Model:
    """char ids -> {"elmo": [b, t, 2P] per-token vectors, "scores": [b, 2] from the sentence vector}."""
    ids = keras.Input(shape=(None, elmo.max_chars), dtype="int32", name="char_ids")
    outputs = elmo(ids)  # output_mode="dict"
    scores = keras.layers.Dense(2, name="scores")(outputs["default"])
    return keras.Model(ids, {"elmo": outputs["elmo"], "scores": scores}, name="elmo_model")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--options", help="bilm-tf options.json (with --weights)")
    p.add_argument("--weights", help="bilm-tf HDF5 weight file (with --options)")
    p.add_argument("--preset", help="a keras_elmo preset name or a local preset directory")
    p.add_argument("--quick", action="store_true", help="accepted for symmetry; this script is always quick")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if bool(args.options) != bool(args.weights):
        p.error("--options and --weights go together")
    if args.preset and args.options:
        p.error("give either --preset or --options/--weights, not both")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}")

    elmo = make_elmo(args, output_mode="dict", name="elmo")
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
