"""Reading and writing the standard bilm-tf / AllenNLP HDF5 weight layout.

`bilm_dataset_shapes` is the one table of dataset names and shapes; reading,
validating and writing all go through it. This module knows nothing of
downloads.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

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


def read_bilm_weights(weight_file: str | os.PathLike, options: ELMoOptions) -> dict[str, np.ndarray]:
    """Reads and validates every dataset that `options` needs, as float32 arrays.

    Raises:
        FileNotFoundError: no such file.
        WeightFileError: a dataset is missing or its shape does not fit the options
            (the message names the dataset and both shapes), or the file holds more
            LSTM layers than `lstm.n_layers`.
    """
    path = os.fspath(weight_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ELMo weight file not found: {path!r}.")
    arrays = {}
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightFileError(f"{path}: not a readable HDF5 file ({e}).") from None
    with f:
        for name, shape in bilm_dataset_shapes(options).items():
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise WeightFileError(f"{path}: missing dataset {name!r} (expected shape {shape}).")
            array = f[name][...]
            if name == "char_embed" and array.shape == (CHAR_EMBED_ROWS + 1, shape[1]):
                array = array[1:]  # a copy that kept TensorFlow's zero padding row
            if array.shape != shape:
                raise WeightFileError(
                    f"{path}: dataset {name!r} has shape {array.shape}, but the options "
                    f"need {shape}."
                )
            arrays[name] = array.astype(np.float32)
        extra = lstm_cell_prefix(0, options.n_layers)
        if extra in f:
            raise WeightFileError(
                f"{path}: holds more LSTM layers than option 'lstm.n_layers' = "
                f"{options.n_layers} (found {extra!r})."
            )
    return arrays


def assign_bilm_weights(
    char_encoder: "CharEncoder", bilstm: "BiLSTM", arrays: dict[str, np.ndarray]
) -> None:
    """Copies arrays in the HDF5 layout into the two frozen sublayers."""
    o = char_encoder.options
    char_encoder.char_embed.assign(arrays["char_embed"])
    for k in range(len(o.filters)):
        char_encoder.cnn_kernels[k].assign(arrays[f"CNN/W_cnn_{k}"][0])
        char_encoder.cnn_biases[k].assign(arrays[f"CNN/b_cnn_{k}"])
    for k, (w_c, b_c, w_t, b_t) in enumerate(char_encoder.highways):
        w_c.assign(arrays[f"CNN_high_{k}/W_carry"])
        b_c.assign(arrays[f"CNN_high_{k}/b_carry"])
        w_t.assign(arrays[f"CNN_high_{k}/W_transform"])
        b_t.assign(arrays[f"CNN_high_{k}/b_transform"])
    if o.use_char_projection:
        char_encoder.proj_kernel.assign(arrays["CNN_proj/W_proj"])
        char_encoder.proj_bias.assign(arrays["CNN_proj/b_proj"])
    for layer in range(o.n_layers):
        cells = [lstm_cell_prefix(d, layer) for d in (0, 1)]
        kernels = np.stack([arrays[f"{c}/W_0"] for c in cells])
        width = bilstm.input_kernels[layer].shape[1]
        bilstm.input_kernels[layer].assign(kernels[:, :width])
        bilstm.recurrent_kernels[layer].assign(kernels[:, width:])
        bilstm.biases[layer].assign(np.stack([arrays[f"{c}/B"] for c in cells]))
        if o.use_lstm_projection:
            bilstm.proj_kernels[layer].assign(np.stack([arrays[f"{c}/W_P_0"] for c in cells]))


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
        kernels = np.concatenate(
            [np_(bilstm.input_kernels[layer]), np_(bilstm.recurrent_kernels[layer])], axis=1
        )
        biases = np_(bilstm.biases[layer])
        for d in (0, 1):
            prefix = lstm_cell_prefix(d, layer)
            arrays[f"{prefix}/W_0"] = kernels[d]
            arrays[f"{prefix}/B"] = biases[d]
            if o.use_lstm_projection:
                arrays[f"{prefix}/W_P_0"] = np_(bilstm.proj_kernels[layer])[d]
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
