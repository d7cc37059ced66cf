"""Train a sentence classifier on ELMo vectors with `model.fit`, on any Keras backend.

The model is `ELMoLayer(output_mode="default")` (the ELMo vectors averaged over each
sentence's real tokens, padding excluded), standardized by a `Normalization` layer
adapted once on the training set, feeding a small Dense head. The biLM stays frozen:
only the layer's `ScalarMix` (one weight per biLM layer, plus gamma: 4 scalars for
the usual 2-layer models) and the head train.
The data are a few hundred synthetic positive/negative review sentences that the
script makes itself, so it needs no download.

Run it from the repository root (or with keras_elmo installed):

    python examples/sentence_classifier.py                       # TensorFlow (the default backend)
    KERAS_BACKEND=jax python examples/sentence_classifier.py
    KERAS_BACKEND=torch python examples/sentence_classifier.py
    python examples/sentence_classifier.py --quick               # a few seconds of training

    # a published model: a bilm-tf options file and its HDF5 weights
    python examples/sentence_classifier.py --options options.json --weights lm_weights.hdf5
    # or a preset, by name or a local directory (see keras_elmo.list_presets())
    python examples/sentence_classifier.py --preset PRESET_NAME_OR_DIR

Without --options/--weights/--preset it builds a small randomly initialised ELMo and
says so: it runs offline in seconds, but its accuracies say nothing about real use.

Inputs: the model takes character ids, int32 [batch, max_len, 50], from
`keras_elmo.char_ids(token_lists)`. They work in `model.fit` on every backend. On
TensorFlow only, the model may instead take raw sentences, a `tf.string` tensor
[batch] (`keras.Input(shape=(), dtype="string")`); JAX and PyTorch cannot carry
strings through `fit`, so this example uses ids everywhere.
"""

from __future__ import annotations

import argparse
import sys

from _common import add_model_args, check_model_args, keras_elmo, make_elmo, start  # first: makes keras_elmo importable

import keras
import numpy as np
from keras import ops

# ---------------------------------------------------------------------------- the data
SUBJECTS = [
    "the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending",
    "the script", "the cast", "the story", "the director's work", "the camera work",
]
POSITIVE = [
    "great", "wonderful", "excellent", "superb", "delightful", "lovely", "brilliant",
    "fantastic", "enjoyable", "charming", "moving", "beautiful",
]
NEGATIVE = [
    "terrible", "awful", "boring", "dreadful", "horrible", "dull", "poor",
    "disappointing", "tedious", "bad", "weak", "clumsy",
]
TEMPLATES = [
    "{s} was {a}",
    "i found {s} {a}",
    "honestly , {s} is {a}",
    "{s} was {a} and {b}",
    "what a {a} experience",
    "everyone said {s} was {a} , and it is",
    "{s} felt {a} from start to end",
]


def make_dataset(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """`n` sentences, half positive (label 1), half negative (label 0), shuffled."""
    rng = np.random.default_rng(seed)
    sentences, labels = [], []
    for i in range(n):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        a, b = rng.choice(words, size=2, replace=False)
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        sentences.append(template.format(s=rng.choice(SUBJECTS), a=a, b=b))
        labels.append(label)
    order = rng.permutation(n)
    return [sentences[k] for k in order], np.asarray(labels, dtype="float32")[order]


# ---------------------------------------------------------------------------- the model
def build_classifier(elmo: keras.layers.Layer, max_chars: int) -> tuple[keras.Model, keras.Model]:
    """char ids [b, t, 50] -> ELMo mean over real tokens [b, 2P] -> standardize -> Dense -> P(positive).

    Returns the classifier and a model for its ELMo sentence vectors (the same layer),
    used to adapt the `Normalization` layer before training.
    """
    ids = keras.Input(shape=(None, max_chars), dtype="int32", name="char_ids")
    sentence = elmo(ids)  # output_mode="default": [batch, 2P], padding excluded
    # Standardizing each feature makes the head's job easy whatever the vectors' scale
    # (tiny for a randomly initialised biLM). Its statistics are fixed, not trained.
    normalized = keras.layers.Normalization(name="standardize")(sentence)
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(normalized)
    prob = keras.layers.Dense(1, activation="sigmoid", name="prob")(hidden)
    return (
        keras.Model(ids, prob, name="elmo_sentence_classifier"),
        keras.Model(ids, sentence, name="elmo_sentence_vectors"),
    )


def mix_weights(elmo: keras.layers.Layer) -> tuple[np.ndarray, float]:
    """The ScalarMix's softmax-normalised layer weights and its gamma."""
    mix = elmo.scalar_mix
    weights = ops.convert_to_numpy(ops.softmax(mix.scalar_weights))
    return weights, float(ops.convert_to_numpy(mix.gamma))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 15; 3 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smaller dataset and fewer epochs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_model_args(p, args)
    if args.epochs is None:
        args.epochs = 3 if args.quick else 15
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start(args)

    elmo = make_elmo(args, "accuracies are not meaningful for real use.", output_mode="default", name="elmo")
    model, sentence_vectors = build_classifier(elmo, elmo.max_chars)
    trainable = {w.path: tuple(w.shape) for w in model.trainable_weights}
    print(f"Trainable weights (the biLM is frozen): {trainable}")

    n = 160 if args.quick else 480
    sentences, labels = make_dataset(n, seed=args.seed)
    # One padded id array for the whole set: rows pad with all-zero tokens, which the
    # layer ignores. keras_elmo.tokenize splits on spaces, as TF-Hub's ELMo does.
    ids = keras_elmo.char_ids([keras_elmo.tokenize(s) for s in sentences], max_chars=elmo.max_chars)
    split = int(0.8 * n)
    x_train, y_train, x_val, y_val = ids[:split], labels[:split], ids[split:], labels[split:]
    print(f"{split} training and {n - split} validation sentences, ids {ids.shape}; e.g. {sentences[0]!r}")

    model.get_layer("standardize").adapt(sentence_vectors.predict(x_train, batch_size=64, verbose=0))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-2),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        x_train, y_train, validation_data=(x_val, y_val),
        epochs=args.epochs, batch_size=32, verbose=2,
    )
    _, train_acc = model.evaluate(x_train, y_train, verbose=0)
    _, val_acc = model.evaluate(x_val, y_val, verbose=0)
    print(f"train accuracy {train_acc:.3f}, validation accuracy {val_acc:.3f}")

    weights, gamma = mix_weights(elmo)
    names = ["token embedding"] + [f"LSTM layer {k}" for k in range(1, len(weights))]
    print("Learned ScalarMix: " + ", ".join(f"{nm} {w:.3f}" for nm, w in zip(names, weights)) + f"; gamma {gamma:.3f}")

    examples = ["the acting was wonderful", "the plot was tedious and dull"]
    probs = model.predict(keras_elmo.char_ids([keras_elmo.tokenize(s) for s in examples], max_chars=elmo.max_chars), verbose=0)
    for sentence, p in zip(examples, probs[:, 0]):
        print(f"  P(positive | {sentence!r}) = {p:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
