"""The character CNN token encoder of bilm-tf.

ids [..., 50] -> character embedding -> one convolution per filter width -> max over
character positions -> activation -> highway layers -> linear projection => [..., P]
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_elmo.chars import PAD_CHAR, boundary_char_ids
from keras_elmo.options import ELMoOptions
from keras_elmo.recurrence import bucket, bucket_floor, compiled, float32_products
from keras_elmo.weights import initializer_for, weights_fingerprint


@keras.saving.register_keras_serializable(package="keras_elmo")
class CharEncoder(keras.layers.Layer):
    """Maps character ids [..., max_chars] to token embeddings [..., P].

    Weights follow the HDF5 layout: `char_embed` holds the 261 rows of ids 1..261
    (id 0, a padding token's, embeds to zeros), `cnn_kernel_k` is the squeezed
    `CNN/W_cnn_k` [width, char_dim, count], highway layer k computes
    `carry * relu(x W_transform + b) + (1 - carry) * x` with
    `carry = sigmoid(x W_carry + b)`.

    Args:
        options: the model's `ELMoOptions` (or a bilm-tf options dict).
        weights_trainable: create the weights trainable (default False: frozen).
    """

    def __init__(self, options: ELMoOptions | dict, weights_trainable: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.options = options if isinstance(options, ELMoOptions) else ELMoOptions.from_dict(options)
        self.weights_trainable = weights_trainable

    def build(self, input_shape: Any = None) -> None:
        o = self.options
        frozen = self.weights_trainable

        def weight(name: str, shape: tuple[int, ...], init: str = "glorot_uniform"):
            init = initializer_for("char_encoder", name, init)  # from_files: the file's values
            return self.add_weight(name=name, shape=shape, initializer=init, trainable=frozen)

        self.char_embed = weight("char_embed", (261, o.char_embedding_dim), "random_uniform")
        self.cnn_kernels, self.cnn_biases = [], []
        for k, (width, count) in enumerate(o.filters):
            self.cnn_kernels.append(weight(f"cnn_kernel_{k}", (width, o.char_embedding_dim, count)))
            self.cnn_biases.append(weight(f"cnn_bias_{k}", (count,), "zeros"))
        n = o.n_filters
        self.highways = []
        for k in range(o.n_highway):
            self.highways.append(
                (
                    weight(f"highway_{k}_carry_kernel", (n, n)),
                    weight(f"highway_{k}_carry_bias", (n,), "zeros"),
                    weight(f"highway_{k}_transform_kernel", (n, n)),
                    weight(f"highway_{k}_transform_bias", (n,), "zeros"),
                )
            )
        if o.use_char_projection:
            self.proj_kernel = weight("proj_kernel", (n, o.projection_dim))
            self.proj_bias = weight("proj_bias", (o.projection_dim,), "zeros")
        self.built = True

    @float32_products
    def call(self, ids):
        return encode_chars(self.options, self.compute_dtype, self._weight_tree(), ids)

    def _weight_tree(self, values: bool = False) -> dict[str, Any]:
        """The weights as a nested structure: the variables, or (`values=True`) their
        current values as plain tensors, which a compiled function takes as arguments."""
        get = (lambda v: v.value) if values else (lambda v: v)
        return {
            "char_embed": get(self.char_embed),
            "cnn": [(get(k), get(b)) for k, b in zip(self.cnn_kernels, self.cnn_biases)],
            "highways": [tuple(get(v) for v in weights) for weights in self.highways],
            "proj": (get(self.proj_kernel), get(self.proj_bias)) if self.options.use_char_projection else (),
        }

    # ------------------------------------------------------------------ inference path
    #: Most distinct tokens per call of the compiled encoder at full width: bounds the
    #: memory of the convolution outputs (about 180 KB per token of 50 characters for
    #: the original model). Calls on shorter tokens, cut to fewer characters, take
    #: proportionally more tokens (the same characters per call).
    MAX_TOKENS_PER_CALL = 128

    @float32_products
    def encode_unique(self, ids: np.ndarray, cache: "TokenEmbeddingCache | None" = None):
        """Embeds every distinct token of a batch once (the padding token as zeros).

        Args:
            ids: numpy character ids [batch, T, max_chars].
            cache: an optional `TokenEmbeddingCache` of earlier tokens.

        Returns:
            `(table, index, rows)`: `table` [n, P] (a backend tensor) holds one row per
            distinct token, `index` (numpy int32 [batch, T]) the row of each position,
            and `rows` the rows of the padding token, `<S>` and `</S>`.
        """
        width = self.options.max_characters_per_token
        special = np.concatenate([np.zeros((1, width), np.int32), boundary_char_ids(width)])
        tokens, inverse = unique_rows(np.concatenate([special, ids.reshape(-1, width)]))
        rows = tuple(int(r) for r in inverse[:3])
        index = inverse[3:].reshape(ids.shape[:-1]).astype(np.int32)
        if cache is None:
            return self._encode_compiled(tokens), index, rows
        cache.check_weights(weights_fingerprint(self.weights))
        found, missing = cache.lookup(tokens)
        # float32 holds every compute dtype's values exactly (numpy has no bfloat16).
        table = np.empty((len(tokens), self.options.projection_dim), dtype=np.float32)
        for i, vector in found.items():
            table[i] = vector
        if missing:
            computed = ops.convert_to_numpy(ops.cast(self._encode_compiled(tokens[missing]), "float32"))
            table[missing] = computed
            cache.insert(tokens[missing], computed)
        return ops.cast(ops.convert_to_tensor(table), self.compute_dtype), index, rows

    def _encode_compiled(self, tokens: np.ndarray):
        """Token embeddings [n, P] of character ids [n, max_chars]; all-zero ids give zeros.

        Runs the compiled encoder on chunks of tokens of similar length, each cut to
        `chars_needed` characters (exact: see there) and padded to a `bucket` number
        of tokens, so few shapes are ever compiled. A chunk holds at most
        `MAX_TOKENS_PER_CALL * max_chars` characters. In the benchmark's batches most
        tokens need 16 or 24 of the 50 characters: the convolutions cost a third to a
        half as much, and the highway layers run on larger chunks.
        """
        key = ("char_encoder", self.options, self.compute_dtype)
        encode = compiled(key, functools.partial(_encode_tokens, self.options, self.compute_dtype))
        weights = self._weight_tree(values=True)
        width = tokens.shape[1]
        widest = max(w for w, _ in self.options.filters)
        needed = chars_needed(tokens, widest)
        order = np.argsort(needed, kind="stable")  # shortest first
        budget = self.MAX_TOKENS_PER_CALL * width
        needed_sorted = needed[order]
        parts, start = [], 0
        while start < len(tokens):
            # The most tokens whose characters fit the budget at the width of the
            # longest of them (the last: sorted), padded rows included.
            fits = np.arange(1, len(tokens) - start + 1) * needed_sorted[start:] <= budget
            count = len(fits) if fits.all() else max(1, int(np.argmin(fits)))
            if bucket(count) * int(needed_sorted[start + count - 1]) > budget:
                count = bucket_floor(count)
            chars = int(needed_sorted[start + count - 1])
            chunk = tokens[order[start : start + count], :chars]
            padded = np.zeros((bucket(count, minimum=8), chars), np.int32)
            padded[:count] = chunk
            parts.append(encode(weights, ops.convert_to_tensor(padded))[:count])
            start += count
        table = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)
        if np.array_equal(order, np.arange(len(order))):
            return table
        return ops.take(table, ops.convert_to_tensor(np.argsort(order).astype(np.int32)), axis=0)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.options.projection_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(options=self.options.to_dict(), weights_trainable=self.weights_trainable)
        return config


def encode_chars(o: ELMoOptions, dtype: str, weights: dict[str, Any], ids):
    """The encoder's computation: character ids [..., max_chars] -> [..., P] in `dtype`,
    with the weights given as `CharEncoder._weight_tree` gives them."""
    lead = ops.shape(ids)[:-1]
    ids = ops.reshape(ids, (-1, ids.shape[-1] or o.max_characters_per_token))  # inference may cut them
    # Row 0 is the padding token's character: zeros, not a weight.
    table = ops.pad(ops.cast(weights["char_embed"], dtype), ((1, 0), (0, 0)))
    chars = ops.take(table, ops.cast(ids, "int32"), axis=0)  # [n, 50, dim]
    act = ops.relu if o.activation == "relu" else ops.tanh
    pooled = []
    for kernel, bias in weights["cnn"]:
        conv = ops.conv(chars, ops.cast(kernel, dtype), padding="valid")
        # bilm-tf adds the bias before the max; a constant commutes with it.
        pooled.append(act(ops.max(conv, axis=1) + ops.cast(bias, dtype)))
    x = ops.concatenate(pooled, axis=-1)
    for w_c, b_c, w_t, b_t in weights["highways"]:
        carry = ops.sigmoid(ops.matmul(x, ops.cast(w_c, x.dtype)) + ops.cast(b_c, x.dtype))
        transform = ops.relu(ops.matmul(x, ops.cast(w_t, x.dtype)) + ops.cast(b_t, x.dtype))
        x = carry * transform + (1.0 - carry) * x
    if weights["proj"]:
        kernel, bias = weights["proj"]
        x = ops.matmul(x, ops.cast(kernel, x.dtype)) + ops.cast(bias, x.dtype)
    return ops.reshape(x, (*lead, o.projection_dim))


def _encode_tokens(o: ELMoOptions, dtype: str, weights: dict[str, Any], ids):
    """`encode_chars` on ids [n, max_chars], with zeros for the all-zero (padding) rows."""
    real = ops.any(ops.not_equal(ids, 0), axis=-1)[:, None]
    x = encode_chars(o, dtype, weights, ids)
    return ops.where(real, x, ops.zeros_like(x))


def chars_needed(tokens: np.ndarray, widest: int) -> np.ndarray:
    """For each token of character ids [n, max_chars], how many leading characters give
    its embedding exactly: up to its last character that is not the in-token padding
    (`PAD_CHAR + 1`), plus the widest filter, rounded up to a `bucket` size of at
    least 16 (at most max_chars; 16 for the all-zero padding token).

    Past its last character a token holds only padding, so every convolution window
    lying wholly there has the same value, computed from the same inputs in the same
    order. The cut keeps at least one such window per filter width and every window
    that touches a real character, so the max over positions is the same: bit for
    bit on TensorFlow, JAX and PyTorch (checked on CPU); only which positions repeat
    the padding's value changes.
    """
    width = tokens.shape[1]
    other = tokens != PAD_CHAR + 1
    last = width - np.argmax(other[:, ::-1], axis=1)  # 1 + index of the last non-padding id
    last = np.where(other.any(axis=1) & (tokens != 0).any(axis=1), last, 0)
    sizes = np.array([bucket(n + widest, minimum=16) for n in range(width + 1)])
    return np.minimum(sizes[last], width)


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of an int array [n, width] and, for each row, its index among them."""
    rows = np.ascontiguousarray(rows, dtype=np.int32)
    keys = rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return rows[first], inverse.reshape(-1)


class TokenEmbeddingCache:
    """A bounded least-recently-used map from a token's character ids to its embedding.

    Used by `CharEncoder.encode_unique` when the ELMo layer is built with
    `token_cache_size > 0`. It empties itself when the encoder's weights change
    (checked with a cheap fingerprint on every call).
    """

    def __init__(self, max_size: int):
        self.max_size = int(max_size)
        self._data: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()
        self._fingerprint: str | None = None
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()

    def check_weights(self, fingerprint: str) -> None:
        if fingerprint != self._fingerprint:
            self.clear()
            self._fingerprint = fingerprint

    def lookup(self, tokens: np.ndarray) -> tuple[dict[int, np.ndarray], list[int]]:
        """({row: embedding} for cached rows of `tokens`, [rows to compute])."""
        found, missing = {}, []
        for i, row in enumerate(tokens):
            key = row.tobytes()
            vector = self._data.get(key)
            if vector is None:
                missing.append(i)
            else:
                self._data.move_to_end(key)
                found[i] = vector
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def insert(self, tokens: np.ndarray, vectors: np.ndarray) -> None:
        for row, vector in zip(tokens, vectors):
            self._data[row.tobytes()] = vector.copy()  # not a view that keeps `vectors` alive
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)
