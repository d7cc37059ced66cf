"""Reading and writing the standard bilm-tf / AllenNLP HDF5 weight layout.

`bilm_dataset_shapes` is the one table of dataset names and shapes; reading,
validating and writing all go through it. TF-Hub modules are read into the same
layout (`read_tfhub_weights`), and `save_bilm_weights` exports a layer to it.
This module knows nothing of downloads.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import h5py
import numpy as np

from keras_elmo.options import ELMoOptions

if TYPE_CHECKING:
    from keras_elmo.bilstm import BiLSTM
    from keras_elmo.char_encoder import CharEncoder

#: Rows of `char_embed` in the file: ids 1..261 (id 0 embeds to zeros).
CHAR_EMBED_ROWS = 261


class WeightFileError(ValueError):
    """A weight file that does not hold the model its options describe."""


def lstm_cell_prefix(direction: int, layer: int) -> str:
    """HDF5 group of one LSTM cell: direction 0 is forward, 1 backward."""
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def weights_fingerprint(weights: Any) -> str:
    """A digest of the small weights and a strided sample of the large ones: it
    changes when the weights are replaced (`set_weights`, `load_weights`, ...).
    For caches of values derived from frozen weights."""
    from keras import ops

    digest = hashlib.sha1()
    for weight in weights:
        value = weight.value
        if len(weight.shape) >= 2 and np.prod(weight.shape) > 4096:
            value = value[tuple(slice(None, None, max(1, n // 8)) for n in weight.shape)]
        digest.update(np.ascontiguousarray(ops.convert_to_numpy(value)).tobytes())
    return digest.hexdigest()


def bilm_dataset_shapes(options: ELMoOptions) -> dict[str, tuple[int, ...]]:
    """Every dataset of the standard layout with its shape, in file order."""
    o = options
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (CHAR_EMBED_ROWS, o.char_embedding_dim)}
    for k, (width, count) in enumerate(o.filters):
        shapes[f"CNN/W_cnn_{k}"] = (1, width, o.char_embedding_dim, count)
        shapes[f"CNN/b_cnn_{k}"] = (count,)
    n = o.n_filters
    for k in range(o.n_highway):
        for part in ("carry", "transform"):
            shapes[f"CNN_high_{k}/W_{part}"] = (n, n)
            shapes[f"CNN_high_{k}/b_{part}"] = (n,)
    if o.use_char_projection:
        shapes["CNN_proj/W_proj"] = (n, o.projection_dim)
        shapes["CNN_proj/b_proj"] = (o.projection_dim,)
    out = o.projection_dim if o.use_lstm_projection else o.lstm_dim
    for direction in (0, 1):
        for layer in range(o.n_layers):
            width = o.projection_dim if layer == 0 else out
            prefix = lstm_cell_prefix(direction, layer)
            shapes[f"{prefix}/W_0"] = (width + out, 4 * o.lstm_dim)
            shapes[f"{prefix}/B"] = (4 * o.lstm_dim,)
            if o.use_lstm_projection:
                shapes[f"{prefix}/W_P_0"] = (o.lstm_dim, out)
    return shapes


@contextlib.contextmanager
def open_bilm_weights(weight_file: str | os.PathLike, options: ELMoOptions) -> Iterator[h5py.File]:
    """Opens an HDF5 weight file for reading after checking that every dataset the
    options need is there with the right shape (from the file's metadata: nothing
    is read yet). The file is closed on leaving the `with` block.

    Raises:
        FileNotFoundError: no such file.
        WeightFileError: a dataset is missing or its shape does not fit the options
            (the message names the dataset and both shapes), or the file holds more
            LSTM layers than `lstm.n_layers`.
    """
    path = os.fspath(weight_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ELMo weight file not found: {path!r}.")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightFileError(f"{path}: not a readable HDF5 file ({e}).") from None
    with f:
        for name, shape in bilm_dataset_shapes(options).items():
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise WeightFileError(f"{path}: missing dataset {name!r} (expected shape {shape}).")
            found = f[name].shape
            if name == "char_embed" and found == (CHAR_EMBED_ROWS + 1, shape[1]):
                continue  # a copy that kept TensorFlow's zero padding row: `_read` drops it
            if found != shape:
                raise WeightFileError(
                    f"{path}: dataset {name!r} has shape {found}, but the options need {shape}."
                )
        extra = lstm_cell_prefix(0, options.n_layers)
        if extra in f:
            raise WeightFileError(
                f"{path}: holds more LSTM layers than option 'lstm.n_layers' = "
                f"{options.n_layers} (found {extra!r})."
            )
        yield f


def _read(source: Any, name: str, rows: slice = slice(None)) -> np.ndarray:
    """Dataset `name` of an open HDF5 file or a dict of arrays, as float32 (only
    `rows` of it: HDF5 reads just those)."""
    data = source[name]
    if name == "char_embed" and data.shape[0] == CHAR_EMBED_ROWS + 1:
        rows = slice(1, None)
    return np.asarray(data[rows], dtype=np.float32)


def read_bilm_weights(weight_file: str | os.PathLike, options: ELMoOptions) -> dict[str, np.ndarray]:
    """Reads and validates every dataset that `options` needs, as float32 arrays.

    Raises what `open_bilm_weights` raises. (`from_files` does not use this: it
    assigns from the open file, one dataset at a time.)
    """
    with open_bilm_weights(weight_file, options) as f:
        return {name: _read(f, name) for name in bilm_dataset_shapes(options)}


def bilm_variable_values(options: ELMoOptions, arrays: Mapping[str, Any]) -> dict[str, Callable[[], np.ndarray]]:
    """How each sublayer variable is read from the HDF5 layout: `"char_encoder/<name>"`
    and `"bilstm/<name>"` -> a function that reads its value (float32) from `arrays`
    (a dict of arrays or an open, checked HDF5 file). Reading is deferred so that
    memory holds one variable's value at a time."""
    o = options
    values: dict[str, Callable[[], np.ndarray]] = {"char_encoder/char_embed": lambda: _read(arrays, "char_embed")}
    for k in range(len(o.filters)):
        values[f"char_encoder/cnn_kernel_{k}"] = lambda k=k: _read(arrays, f"CNN/W_cnn_{k}")[0]
        values[f"char_encoder/cnn_bias_{k}"] = lambda k=k: _read(arrays, f"CNN/b_cnn_{k}")
    for k in range(o.n_highway):
        for part in ("carry", "transform"):
            values[f"char_encoder/highway_{k}_{part}_kernel"] = lambda k=k, p=part: _read(arrays, f"CNN_high_{k}/W_{p}")
            values[f"char_encoder/highway_{k}_{part}_bias"] = lambda k=k, p=part: _read(arrays, f"CNN_high_{k}/b_{p}")
    if o.use_char_projection:
        values["char_encoder/proj_kernel"] = lambda: _read(arrays, "CNN_proj/W_proj")
        values["char_encoder/proj_bias"] = lambda: _read(arrays, "CNN_proj/b_proj")
    out = o.projection_dim if o.use_lstm_projection else o.lstm_dim
    for layer in range(o.n_layers):
        cells = [lstm_cell_prefix(d, layer) for d in (0, 1)]
        width = o.projection_dim if layer == 0 else out

        def both(
            name: str, rows: slice = slice(None), transpose: bool = False, cells=cells
        ) -> Callable[[], np.ndarray]:
            def read() -> np.ndarray:
                value = np.stack([_read(arrays, f"{c}/{name}", rows) for c in cells])
                return np.ascontiguousarray(np.swapaxes(value, 1, 2)) if transpose else value

            return read

        # `W_0` is [input; recurrent] stacked: each half is read on its own. The
        # biLSTM keeps the recurrent and projection kernels transposed.
        values[f"bilstm/input_kernel_{layer}"] = both("W_0", slice(None, width))
        values[f"bilstm/recurrent_kernel_{layer}"] = both("W_0", slice(width, None), transpose=True)
        values[f"bilstm/bias_{layer}"] = both("B")
        if o.use_lstm_projection:
            values[f"bilstm/proj_kernel_{layer}"] = both("W_P_0", transpose=True)
    return values


def assign_bilm_weights(char_encoder: "CharEncoder", bilstm: "BiLSTM", arrays: Mapping[str, Any]) -> None:
    """Copies arrays in the HDF5 layout (a dict of arrays or an open, checked HDF5
    file) into the two frozen sublayers, one variable at a time."""
    values = bilm_variable_values(char_encoder.options, arrays)
    for kind, sublayer in (("char_encoder", char_encoder), ("bilstm", bilstm)):
        for variable in sublayer.weights:
            variable.assign(values[f"{kind}/{variable.name}"]())


#: While set (`initial_bilm_values`), the sublayers' `build` takes each variable's
#: first value from here instead of a random initializer.
_INITIAL_VALUES: contextvars.ContextVar[dict[str, Callable[[], np.ndarray]] | None] = contextvars.ContextVar(
    "keras_elmo_initial_values", default=None
)


@contextlib.contextmanager
def initial_bilm_values(options: ELMoOptions, arrays: Mapping[str, Any]) -> Iterator[None]:
    """Sublayers built inside this block start with the values in `arrays` (HDF5
    layout): no random values are drawn only to be overwritten, and memory never
    holds the model twice."""
    token = _INITIAL_VALUES.set(bilm_variable_values(options, arrays))
    try:
        yield
    finally:
        _INITIAL_VALUES.reset(token)


def initializer_for(kind: str, name: str, default: Any) -> Any:
    """The initializer for variable `name` of sublayer `kind` ("char_encoder" or
    "bilstm"): its value from `initial_bilm_values`, if active, else `default`."""
    values = _INITIAL_VALUES.get()
    if values is None:
        return default
    read = values[f"{kind}/{name}"]
    return lambda shape, dtype=None: read()


def collect_bilm_weights(char_encoder: "CharEncoder", bilstm: "BiLSTM") -> dict[str, np.ndarray]:
    """The inverse of `assign_bilm_weights`: the sublayers' weights in the HDF5 layout."""
    from keras import ops

    def np_(v: Any) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(v), dtype=np.float32)

    o = char_encoder.options
    arrays = {"char_embed": np_(char_encoder.char_embed)}
    for k in range(len(o.filters)):
        arrays[f"CNN/W_cnn_{k}"] = np_(char_encoder.cnn_kernels[k])[None]
        arrays[f"CNN/b_cnn_{k}"] = np_(char_encoder.cnn_biases[k])
    for k, (w_c, b_c, w_t, b_t) in enumerate(char_encoder.highways):
        arrays[f"CNN_high_{k}/W_carry"] = np_(w_c)
        arrays[f"CNN_high_{k}/b_carry"] = np_(b_c)
        arrays[f"CNN_high_{k}/W_transform"] = np_(w_t)
        arrays[f"CNN_high_{k}/b_transform"] = np_(b_t)
    if o.use_char_projection:
        arrays["CNN_proj/W_proj"] = np_(char_encoder.proj_kernel)
        arrays["CNN_proj/b_proj"] = np_(char_encoder.proj_bias)
    for layer in range(o.n_layers):
        # The biLSTM stores the recurrent and projection kernels transposed.
        recurrent = np.swapaxes(np_(bilstm.recurrent_kernels[layer]), 1, 2)
        kernels = np.concatenate([np_(bilstm.input_kernels[layer]), recurrent], axis=1)
        biases = np_(bilstm.biases[layer])
        proj = np.swapaxes(np_(bilstm.proj_kernels[layer]), 1, 2) if o.use_lstm_projection else None
        for d in (0, 1):
            prefix = lstm_cell_prefix(d, layer)
            arrays[f"{prefix}/W_0"] = kernels[d]
            arrays[f"{prefix}/B"] = biases[d]
            if proj is not None:
                arrays[f"{prefix}/W_P_0"] = proj[d]
    return arrays


def write_bilm_weights(weight_file: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Writes arrays in the standard layout (float32) to a new HDF5 file.

    Writes to a temporary name first, so an interrupted write never leaves a
    file that looks complete.
    """
    path = os.fspath(weight_file)
    tmp = f"{path}.partial"
    with h5py.File(tmp, "w") as f:
        for name in sorted(arrays):
            f.create_dataset(name, data=np.asarray(arrays[name], dtype=np.float32))
    os.replace(tmp, path)


# ---------------------------------------------------------------------- export


def save_bilm_weights(
    layer: Any, weight_file: str | os.PathLike, options_file: str | os.PathLike
) -> None:
    """Writes a layer's biLM as the standard `options.json` + HDF5 pair.

    The files have exactly the dataset names, shapes and dtypes (float32) of the
    published models, so bilm-tf and AllenNLP read them: a model fine-tuned here can
    go back to those tools. The task-specific mix (`ScalarMix`) is not part of that
    format; `layer.save_preset(directory)` keeps it too. Both files are written to a
    temporary name first and then renamed, so an interrupted save leaves no file that
    looks complete.

    Args:
        layer: an `ELMoLayer` or `ELMoTokensLayer` (anything with `options`,
            `char_encoder` and `bilstm`).
        weight_file: where to write the HDF5 weights.
        options_file: where to write `options.json`.
    """
    for attribute in ("options", "char_encoder", "bilstm"):
        if not hasattr(layer, attribute):
            raise TypeError(
                "save_bilm_weights: expected an ELMoLayer or ELMoTokensLayer, got "
                f"{type(layer).__name__} (it has no {attribute!r})."
            )
    arrays = collect_bilm_weights(layer.char_encoder, layer.bilstm)
    write_bilm_weights(weight_file, arrays)
    path = os.fspath(options_file)
    tmp = f"{path}.partial"
    layer.options.to_file(tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- TF-Hub import

#: Options of the published original model. A TF-Hub checkpoint holds the shapes
#: but not these settings, so `read_tfhub_weights` takes them from here.
TFHUB_DEFAULT_OPTIONS: dict[str, Any] = {
    "lstm": {
        "use_skip_connections": True,
        "projection_dim": 512,
        "cell_clip": 3,
        "proj_clip": 3,
        "dim": 4096,
        "n_layers": 2,
    },
    "char_cnn": {
        "activation": "relu",
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
        "n_highway": 2,
        "embedding": {"dim": 16},
        "n_characters": 262,
        "max_characters_per_token": 50,
    },
}

#: LSTM variable names in a TF-Hub graph (TF1 `LSTMCell`, old and new spellings)
#: -> the HDF5 dataset they hold.
_TFHUB_LSTM_LEAVES = {
    "lstm_cell/kernel": "W_0",
    "lstm_cell/bias": "B",
    "lstm_cell/projection/kernel": "W_P_0",
    "LSTMCell/W_0": "W_0",
    "LSTMCell/B": "B",
    "LSTMCell/W_P_0": "W_P_0",
}
_TFHUB_LSTM_RE = re.compile(
    r"^RNN_([01])/RNN/MultiRNNCell/Cell(\d+)/(?:rnn/)?("
    + "|".join(re.escape(k) for k in _TFHUB_LSTM_LEAVES)
    + r")$"
)
_TFHUB_PLAIN_RE = re.compile(
    r"^(char_embed|CNN/[Wb]_cnn_\d+|CNN_high_\d+/[Wb]_(?:carry|transform)|CNN_proj/[Wb]_proj)$"
)
_MIX_NAMES = ("aggregation/weights", "aggregation/scaling")


def _tfhub_checkpoint_prefix(module_dir: str | os.PathLike) -> str:
    """The checkpoint prefix of a module directory (`<dir>/variables/variables`)."""
    path = os.fspath(module_dir)
    if not os.path.exists(path) and not os.path.isfile(f"{path}.index"):
        raise FileNotFoundError(f"TF-Hub module directory not found: {path!r}.")
    candidates = [
        os.path.join(path, "variables", "variables"),
        os.path.join(path, "variables"),
        path,
    ]
    for prefix in candidates:
        if os.path.isfile(f"{prefix}.index"):
            return prefix
    raise FileNotFoundError(
        f"{path}: not a TF-Hub module: no checkpoint at "
        f"{os.path.join(path, 'variables', 'variables.index')!r} (a module directory holds "
        "saved_model.pb or tfhub_module.pb and variables/variables.{index,data-*})."
    )


def _tfhub_dataset_name(variable: str) -> str | None:
    """The HDF5 dataset (or `aggregation/...` name) a checkpoint variable holds, or
    None for variables that are not ELMo weights (LSTM states, step counters...)."""
    parts = variable.split("/")
    for i, part in enumerate(parts):
        if part in ("bilm", "aggregation"):
            break
    else:
        return None
    if any(p.startswith("Variable") for p in parts[i:]):
        return None  # bilm-tf's LSTM state variables, not weights
    rest = "/".join(parts[i + 1 :])
    if parts[i] == "aggregation":
        name = f"aggregation/{rest}"
        return name if name in _MIX_NAMES else None
    if _TFHUB_PLAIN_RE.match(rest):
        return rest
    match = _TFHUB_LSTM_RE.match(rest)
    if match:
        direction, layer, leaf = match.groups()
        return f"{lstm_cell_prefix(int(direction), int(layer))}/{_TFHUB_LSTM_LEAVES[leaf]}"
    return None


def _infer_tfhub_options(arrays: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """Options from the checkpoint's shapes, the rest from `TFHUB_DEFAULT_OPTIONS`."""

    def need(name: str) -> np.ndarray:
        if name not in arrays:
            raise WeightFileError(
                f"{source}: no variable for {name!r} (TF-Hub name 'bilm/{name}'); cannot "
                "infer the model's shape. Is this an ELMo module?"
            )
        return arrays[name]

    filters, char_dim = [], None
    while f"CNN/W_cnn_{len(filters)}" in arrays or not filters:
        kernel = need(f"CNN/W_cnn_{len(filters)}")
        if kernel.ndim != 4 or kernel.shape[0] != 1:
            raise WeightFileError(
                f"{source}: variable 'bilm/CNN/W_cnn_{len(filters)}' has shape {kernel.shape}, "
                "expected (1, width, char_dim, count)."
            )
        filters.append([int(kernel.shape[1]), int(kernel.shape[3])])
        char_dim = int(kernel.shape[2])
    n_highway = 0
    while f"CNN_high_{n_highway}/W_carry" in arrays:
        n_highway += 1
    need(f"{lstm_cell_prefix(0, 0)}/W_0")
    n_layers = 0
    while f"{lstm_cell_prefix(0, n_layers)}/W_0" in arrays:
        n_layers += 1
    bias = need(f"{lstm_cell_prefix(0, 0)}/B")
    if bias.ndim != 1 or bias.shape[0] % 4:
        raise WeightFileError(
            f"{source}: LSTM bias of cell 0 has shape {bias.shape}, expected (4 * cell_dim,)."
        )
    lstm_dim = int(bias.shape[0]) // 4
    projection = arrays.get(f"{lstm_cell_prefix(0, 0)}/W_P_0")
    projection_dim = int(projection.shape[-1]) if projection is not None else lstm_dim
    options = json.loads(json.dumps(TFHUB_DEFAULT_OPTIONS))
    options["lstm"].update(dim=lstm_dim, projection_dim=projection_dim, n_layers=n_layers)
    options["char_cnn"].update(filters=filters, n_highway=n_highway, embedding={"dim": char_dim})
    return options


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_tfhub_weights(
    module_dir: str | os.PathLike, options: Any = None
) -> tuple[ELMoOptions, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Reads a TF-Hub ELMo module's variables (through TensorFlow's checkpoint reader).

    Variables are found under `bilm/` and `aggregation/`, with or without a scope
    prefix such as `module/`; LSTM cells may use either the `rnn/lstm_cell/{kernel,
    bias,projection/kernel}` or the `LSTMCell/{W_0,B,W_P_0}` names; LSTM state
    variables (`.../Variable*`) and anything else are ignored. `char_embed` may have
    261 or 262 rows (TensorFlow's graph holds a zero padding row first).

    Args:
        module_dir: the module directory (`saved_model.pb` or `tfhub_module.pb` and
            `variables/`), its `variables/` folder or a checkpoint prefix.
        options: None to infer the shapes from the checkpoint and take the rest
            (skip connections on, clips 3, relu, 50 characters a token) from the
            published original model (`TFHUB_DEFAULT_OPTIONS`); a dict that is merged
            over those (e.g. `{"lstm": {"use_skip_connections": False}}`); or an
            `ELMoOptions` / path to `options.json` used as they are.

    Returns:
        `(options, arrays, mix)`: arrays in the HDF5 layout (as `read_bilm_weights`
        returns them) and `mix` = `{"weights": [n_layers + 1], "scaling": ()}` from
        `aggregation/*`, or None when the module has no mix weights.

    Raises:
        FileNotFoundError: no such directory or no checkpoint in it.
        WeightFileError: a variable is missing, has the wrong shape or is ambiguous.
        OptionsError: the (merged) options are invalid.
    """
    import tensorflow as tf  # the checkpoint reader; works under any Keras backend

    from keras_elmo.options import as_options

    prefix = _tfhub_checkpoint_prefix(module_dir)
    try:
        reader = tf.train.load_checkpoint(prefix)
        variables = reader.get_variable_to_shape_map()
    except Exception as e:  # TF raises its own error types for unreadable bundles
        raise WeightFileError(f"{prefix}: not a readable TensorFlow checkpoint ({e}).") from None
    found: dict[str, np.ndarray] = {}
    source_names: dict[str, str] = {}
    for variable in sorted(variables):
        name = _tfhub_dataset_name(variable)
        if name is None:
            continue
        if name in found:
            raise WeightFileError(
                f"{prefix}: variables {source_names[name]!r} and {variable!r} both hold "
                f"{name!r}; expected one ELMo module per checkpoint."
            )
        found[name] = np.asarray(reader.get_tensor(variable))
        source_names[name] = variable
    if not any(name.startswith("CNN/") for name in found):
        sample = sorted(variables)[:8]
        raise WeightFileError(
            f"{prefix}: no ELMo variables (expected e.g. 'module/bilm/CNN/W_cnn_0' and "
            f"'module/bilm/char_embed'); the checkpoint holds {sample}"
            f"{' ...' if len(variables) > 8 else ''}."
        )

    inferred = _infer_tfhub_options(found, prefix)
    if options is None:
        resolved = ELMoOptions.from_dict(inferred, source=f"options inferred from {prefix}")
    elif isinstance(options, Mapping):
        resolved = ELMoOptions.from_dict(
            _deep_merge(inferred, options), source=f"options= merged over those inferred from {prefix}"
        )
    else:
        resolved = as_options(options)

    arrays: dict[str, np.ndarray] = {}
    for name, shape in bilm_dataset_shapes(resolved).items():
        if name not in found:
            raise WeightFileError(
                f"{prefix}: missing variable for {name!r} (expected shape {shape}); "
                "the options do not fit this module."
            )
        array = found[name]
        if name == "char_embed" and array.shape == (CHAR_EMBED_ROWS + 1, shape[1]):
            array = array[1:]  # TensorFlow's zero padding row
        if array.shape != shape:
            raise WeightFileError(
                f"{prefix}: variable {source_names[name]!r} has shape {array.shape}, but the "
                f"options need {shape} for {name!r}."
            )
        arrays[name] = array.astype(np.float32)
    extra = f"{lstm_cell_prefix(0, resolved.n_layers)}/W_0"
    if extra in found:
        raise WeightFileError(
            f"{prefix}: holds more LSTM layers than option 'lstm.n_layers' = "
            f"{resolved.n_layers} (found {source_names[extra]!r})."
        )

    mix = None
    if any(name in found for name in _MIX_NAMES):
        for name in _MIX_NAMES:
            if name not in found:
                raise WeightFileError(
                    f"{prefix}: has {[n for n in _MIX_NAMES if n in found]} but no {name!r}; "
                    "expected both mix variables or neither."
                )
        weights = found["aggregation/weights"].astype(np.float32)
        scaling = found["aggregation/scaling"].astype(np.float32)
        if weights.shape != (resolved.n_layers + 1,):
            raise WeightFileError(
                f"{prefix}: variable {source_names['aggregation/weights']!r} has shape "
                f"{weights.shape}, expected ({resolved.n_layers + 1},) (one weight per layer)."
            )
        if scaling.shape not in ((), (1,)):
            raise WeightFileError(
                f"{prefix}: variable {source_names['aggregation/scaling']!r} has shape "
                f"{scaling.shape}, expected a scalar or (1,)."
            )
        mix = {"weights": weights, "scaling": scaling.reshape(())}
    return resolved, arrays, mix


def assign_mix_weights(layer: Any, weights: Any, gamma: Any) -> None:
    """Sets a layer's `ScalarMix`: the per-layer weights (before softmax) and gamma."""
    mix = layer.scalar_mix
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != tuple(mix.scalar_weights.shape):
        raise ValueError(
            f"mix weights have shape {weights.shape}, expected {tuple(mix.scalar_weights.shape)}."
        )
    mix.scalar_weights.assign(weights)
    mix.gamma.assign(np.asarray(gamma, dtype=np.float32).reshape(()))


def load_tfhub_module(cls: type, module_dir: str | os.PathLike, **kwargs: Any) -> Any:
    """Builds `cls` (`ELMoLayer` or `ELMoTokensLayer`) from a TF-Hub ELMo module.

    Loads the biLM and carries the module's trained mix (`aggregation/weights`,
    `aggregation/scaling`) over to the layer's `ScalarMix`.

    Args:
        cls: the layer class.
        module_dir: the module directory as TF-Hub caches it (`saved_model.pb`,
            `tfhub_module.pb`, `variables/`).
        **kwargs: `options=` (see `read_tfhub_weights`) and the constructor's
            arguments (`output_mode`, `stateful`, `fine_tune_bilm`, `name`, ...).
    """
    options, arrays, mix = read_tfhub_weights(module_dir, kwargs.pop("options", None))
    with initial_bilm_values(options, arrays):
        layer = cls(options=options, **kwargs)
    if mix is not None:
        assign_mix_weights(layer, mix["weights"], mix["scaling"])
    return layer
