"""The bilm-tf / AllenNLP `options.json` schema as a validated dataclass.

A published ELMo model is an options file plus an HDF5 weight file. This module
only knows the options: what each key means, which values are supported, and
how to read and write them. It knows nothing of weights, files on the network
or Keras.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence, Union

#: Keys that bilm-tf writes into options files for training. They say nothing
#: about the forward pass, so they are accepted and ignored.
_TRAINING_KEYS = frozenset(
    {
        "bidirectional",
        "dropout",
        "n_epochs",
        "n_train_tokens",
        "batch_size",
        "n_tokens_vocab",
        "unroll_steps",
        "n_negative_samples_batch",
        "all_clip_norm_val",
        "sample_softmax",
        "share_embedding_softmax",
        "n_gpus",
    }
)
_LSTM_KEYS = frozenset(
    {"dim", "projection_dim", "n_layers", "cell_clip", "proj_clip", "use_skip_connections"}
)
_CHAR_CNN_KEYS = frozenset(
    {"embedding", "filters", "n_highway", "n_characters", "max_characters_per_token", "activation"}
)
_ACTIVATIONS = ("relu", "tanh")

OptionsLike = Union["ELMoOptions", Mapping[str, Any], str, os.PathLike]


class OptionsError(ValueError):
    """An options file or dict that does not describe a supported ELMo model."""


def _check_int(value: Any, key: str, minimum: int, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(
            f"{source}: option '{key}' must be an integer, got {value!r} "
            f"({type(value).__name__})."
        )
    if value < minimum:
        raise OptionsError(f"{source}: option '{key}' must be >= {minimum}, got {value}.")
    return value


def _check_clip(value: Any, key: str, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise OptionsError(
            f"{source}: option '{key}' must be a positive number or null, got {value!r}."
        )
    return float(value)


def _check_keys(section: Mapping[str, Any], allowed: frozenset, where: str, source: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise OptionsError(
            f"{source}: unknown option(s) {unknown} in '{where}'; "
            f"expected some of {sorted(allowed)}."
        )


@dataclasses.dataclass(frozen=True)
class ELMoOptions:
    """Hyper-parameters of a bilm-tf ELMo model.

    Attributes mirror the keys of `options.json`: `char_cnn.*` describe the
    character encoder, `lstm.*` the biLSTM. `projection_dim` (P) is the width
    of the token embedding and of each LSTM direction's output, so the ELMo
    vectors have 2P features.
    """

    filters: tuple[tuple[int, int], ...]
    char_embedding_dim: int
    n_highway: int
    projection_dim: int
    lstm_dim: int
    n_layers: int
    activation: str = "relu"
    n_characters: int = 262
    max_characters_per_token: int = 50
    cell_clip: float | None = None
    proj_clip: float | None = None
    use_skip_connections: bool = False

    @property
    def n_filters(self) -> int:
        """Total number of CNN channels (sum of the filters' counts)."""
        return sum(n for _, n in self.filters)

    @property
    def output_dim(self) -> int:
        """Width of one LSTM direction's output (and of the token embedding)."""
        return self.projection_dim

    @property
    def use_lstm_projection(self) -> bool:
        """bilm-tf projects the LSTM cell output only when P < cell dim."""
        return self.projection_dim < self.lstm_dim

    @property
    def use_char_projection(self) -> bool:
        """bilm-tf projects the CNN output only when n_filters != P."""
        return self.n_filters != self.projection_dim

    @classmethod
    def from_dict(cls, options: Mapping[str, Any], source: str = "options") -> "ELMoOptions":
        """Validates a bilm-tf options dict (as found in `options.json`)."""
        if not isinstance(options, Mapping):
            raise OptionsError(f"{source}: expected a JSON object, got {type(options).__name__}.")
        _check_keys(options, _TRAINING_KEYS | {"lstm", "char_cnn"}, "top level", source)
        for key in ("lstm", "char_cnn"):
            if not isinstance(options.get(key), Mapping):
                raise OptionsError(f"{source}: missing or invalid section '{key}' (a JSON object).")
        lstm, cnn = options["lstm"], options["char_cnn"]
        _check_keys(lstm, _LSTM_KEYS, "lstm", source)
        _check_keys(cnn, _CHAR_CNN_KEYS, "char_cnn", source)
        for key in ("dim", "projection_dim", "n_layers"):
            if key not in lstm:
                raise OptionsError(f"{source}: missing required option 'lstm.{key}'.")
        for key in ("embedding", "filters", "n_highway"):
            if key not in cnn:
                raise OptionsError(f"{source}: missing required option 'char_cnn.{key}'.")

        embedding = cnn["embedding"]
        if not isinstance(embedding, Mapping) or "dim" not in embedding:
            raise OptionsError(
                f"{source}: option 'char_cnn.embedding' must be an object with 'dim', "
                f"got {embedding!r}."
            )
        filters = cnn["filters"]
        if not isinstance(filters, Sequence) or isinstance(filters, str) or not filters:
            raise OptionsError(
                f"{source}: option 'char_cnn.filters' must be a non-empty list of "
                f"[width, count] pairs, got {filters!r}."
            )
        checked_filters = []
        for i, pair in enumerate(filters):
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise OptionsError(
                    f"{source}: option 'char_cnn.filters[{i}]' must be a [width, count] "
                    f"pair, got {pair!r}."
                )
            width = _check_int(pair[0], f"char_cnn.filters[{i}][0]", 1, source)
            count = _check_int(pair[1], f"char_cnn.filters[{i}][1]", 1, source)
            checked_filters.append((width, count))

        activation = cnn.get("activation", "relu")
        if activation not in _ACTIVATIONS:
            raise OptionsError(
                f"{source}: option 'char_cnn.activation' must be one of {list(_ACTIVATIONS)}, "
                f"got {activation!r}."
            )
        max_chars = _check_int(
            cnn.get("max_characters_per_token", 50), "char_cnn.max_characters_per_token", 3, source
        )
        widest = max(w for w, _ in checked_filters)
        if widest > max_chars:
            raise OptionsError(
                f"{source}: filter width {widest} in 'char_cnn.filters' is wider than "
                f"'char_cnn.max_characters_per_token' ({max_chars})."
            )
        n_characters = _check_int(cnn.get("n_characters", 262), "char_cnn.n_characters", 1, source)
        if n_characters not in (261, 262):
            raise OptionsError(
                f"{source}: option 'char_cnn.n_characters' must be 261 or 262 (256 bytes + "
                f"5 special characters, + padding), got {n_characters}."
            )
        skip = lstm.get("use_skip_connections", False)
        if not isinstance(skip, bool):
            raise OptionsError(
                f"{source}: option 'lstm.use_skip_connections' must be true or false, got {skip!r}."
            )
        projection_dim = _check_int(lstm["projection_dim"], "lstm.projection_dim", 1, source)
        lstm_dim = _check_int(lstm["dim"], "lstm.dim", 1, source)
        if projection_dim > lstm_dim:
            raise OptionsError(
                f"{source}: option 'lstm.projection_dim' ({projection_dim}) must not exceed "
                f"'lstm.dim' ({lstm_dim}): without a projection the LSTM output would not "
                f"match the token embedding's width."
            )
        return cls(
            filters=tuple(checked_filters),
            char_embedding_dim=_check_int(embedding["dim"], "char_cnn.embedding.dim", 1, source),
            n_highway=_check_int(cnn["n_highway"], "char_cnn.n_highway", 0, source),
            projection_dim=projection_dim,
            lstm_dim=lstm_dim,
            n_layers=_check_int(lstm["n_layers"], "lstm.n_layers", 1, source),
            activation=activation,
            n_characters=n_characters,
            max_characters_per_token=max_chars,
            cell_clip=_check_clip(lstm.get("cell_clip"), "lstm.cell_clip", source),
            proj_clip=_check_clip(lstm.get("proj_clip"), "lstm.proj_clip", source),
            use_skip_connections=skip,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ELMoOptions":
        """Reads and validates an `options.json` file."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ELMo options file not found: {path!r}.")
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise OptionsError(f"{path}: not valid JSON ({e}).") from None
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict[str, Any]:
        """The options in the bilm-tf `options.json` layout."""
        return {
            "lstm": {
                "dim": self.lstm_dim,
                "projection_dim": self.projection_dim,
                "n_layers": self.n_layers,
                "cell_clip": self.cell_clip,
                "proj_clip": self.proj_clip,
                "use_skip_connections": self.use_skip_connections,
            },
            "char_cnn": {
                "embedding": {"dim": self.char_embedding_dim},
                "filters": [list(f) for f in self.filters],
                "n_highway": self.n_highway,
                "n_characters": self.n_characters,
                "max_characters_per_token": self.max_characters_per_token,
                "activation": self.activation,
            },
        }

    def to_file(self, path: str | os.PathLike) -> None:
        """Writes the options as `options.json`."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)


def as_options(options: OptionsLike) -> ELMoOptions:
    """Accepts `ELMoOptions`, a bilm-tf options dict, or a path to `options.json`."""
    if isinstance(options, ELMoOptions):
        return options
    if isinstance(options, Mapping):
        return ELMoOptions.from_dict(options)
    if isinstance(options, (str, os.PathLike)):
        return ELMoOptions.from_file(options)
    raise TypeError(
        "`options` must be an ELMoOptions, a dict in the bilm-tf options.json layout or a "
        f"path to options.json; got {type(options).__name__}."
    )
