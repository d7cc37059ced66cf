"""The shared set-up for the examples in this folder; not an example itself.

The scripts run as `python examples/NAME.py`, which puts this folder on `sys.path`,
so they import this module first. Importing it makes `keras_elmo` importable from a
checkout that is not installed (it adds the repository root to `sys.path`). It holds
what every example does to start: the model-choosing flags (`add_model_args`,
`check_model_args`: --options with --weights, or --preset), `start` (seed, and say
which Keras and backend run) and `make_elmo` (the chosen ELMo layer, or a small
random one built from `TINY_OPTIONS` for offline runs).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

try:
    import keras_elmo
except ModuleNotFoundError as e:  # running from a checkout without installing: use the repo root
    if e.name != "keras_elmo":
        raise
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_elmo

import keras

#: A tiny model for offline runs: 32 CNN filters, projection 16, 2 LSTM layers of 32.
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


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose the ELMo model: --options with --weights, or --preset."""
    p.add_argument("--options", help="bilm-tf options.json (with --weights)")
    p.add_argument("--weights", help="bilm-tf HDF5 weight file (with --options)")
    p.add_argument("--preset", help="a keras_elmo preset name or a local preset directory")


def check_model_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Rejects (through `p.error`) the combinations of the model flags that make no sense."""
    if bool(args.options) != bool(args.weights):
        p.error("--options and --weights go together")
    if args.preset and args.options:
        p.error("give either --preset or --options/--weights, not both")


def start(args: argparse.Namespace) -> None:
    """Seeds every random generator Keras uses with --seed and prints the Keras version and backend."""
    keras.utils.set_random_seed(args.seed)
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}")


def make_elmo(args: argparse.Namespace, notice_ending: str, **kwargs) -> keras.layers.Layer:
    """The ELMo layer the flags ask for; prints which one it is.

    `kwargs` go to the layer. With no model flag it is a small random ELMo (TINY_OPTIONS),
    and the notice it prints says so, ending with `notice_ending`: what is not meaningful.
    """
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
    print("NOTE: no --options/--weights/--preset given: using a small randomly initialised ELMo; " + notice_ending)
    return keras_elmo.ELMoLayer(options=TINY_OPTIONS, **kwargs)
