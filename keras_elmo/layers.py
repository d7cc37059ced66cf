"""`ELMoLayer` and `ELMoTokensLayer`: the public Keras layers.

Both run the same model: character ids -> `CharEncoder` -> `BiLSTM` -> `ScalarMix`.
They differ only in the input they take, as TF-Hub's `default` and `tokens`
signatures do. Strings become character ids here (numpy eagerly, `tf.strings`
inside TensorFlow graphs); everything after that is backend-agnostic `keras.ops`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from keras_elmo import batching, chars
from keras_elmo.bilstm import BiLSTM, State
from keras_elmo.char_encoder import CharEncoder, TokenEmbeddingCache
from keras_elmo.options import ELMoOptions, OptionsLike, as_options
from keras_elmo.recurrence import float32_products, release_free_memory
from keras_elmo.scalar_mix import ScalarMix
from keras_elmo.weights import initial_bilm_values, open_bilm_weights

OUTPUT_MODES = ("elmo", "default", "dict")


def _is_tf_tensor(x: Any) -> bool:
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(x, (tf.Tensor, tf.Variable, tf.RaggedTensor))


def _dtype_kind(x: Any) -> str:
    """'string', 'int' or 'other' for any tensor, KerasTensor, array or list."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:  # a Python list
        dtype = np.asarray(x, dtype=object if _looks_like_strings(x) else None).dtype
    if isinstance(dtype, np.dtype):
        return {"U": "string", "S": "string", "O": "string", "i": "int", "u": "int"}.get(
            dtype.kind, "other"
        )
    try:
        name = keras.backend.standardize_dtype(dtype)
    except (ValueError, TypeError):
        return "other"
    if name == "string":
        return "string"
    return "int" if name.startswith(("int", "uint")) else "other"


def _looks_like_strings(x: Any) -> bool:
    """A (nested) list whose first leaf is a string; an empty list is an empty batch of them."""
    while isinstance(x, (list, tuple)):
        if not x:
            return True
        x = x[0]
    return isinstance(x, (str, bytes))


def _is_symbolic(x: Any) -> bool:
    return isinstance(x, keras.KerasTensor)


class _ELMoBase(keras.layers.Layer):
    """What both ELMo layers share: the model, its outputs, state and loading."""

    def __init__(
        self,
        options: OptionsLike,
        output_mode: str = "elmo",
        stateful: bool = False,
        fine_tune_bilm: bool = False,
        token_cache_size: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if output_mode not in OUTPUT_MODES:
            raise ValueError(
                f"`output_mode` must be one of {list(OUTPUT_MODES)}, got {output_mode!r}."
            )
        for name, value in (("stateful", stateful), ("fine_tune_bilm", fine_tune_bilm)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be True or False, got {value!r}.")
        self.options = as_options(options)
        self.output_mode = output_mode
        self.stateful = stateful
        self.fine_tune_bilm = fine_tune_bilm
        # The sublayer attribute names fix the weight paths in `.keras` files.
        self.char_encoder = CharEncoder(
            self.options, weights_trainable=fine_tune_bilm, dtype=self.dtype_policy, name="char_encoder"
        )
        self.bilstm = BiLSTM(
            self.options, weights_trainable=fine_tune_bilm, dtype=self.dtype_policy, name="bilstm"
        )
        self.scalar_mix = ScalarMix(self.options.n_layers + 1, dtype=self.dtype_policy, name="scalar_mix")
        self.supports_masking = True
        # Inputs may be Python lists or string arrays, which Keras must not convert.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self._state: State | None = None
        if isinstance(token_cache_size, bool) or not isinstance(token_cache_size, int) or token_cache_size < 0:
            raise ValueError(f"`token_cache_size` must be an integer >= 0, got {token_cache_size!r}.")
        self.token_cache_size = token_cache_size
        # Opt-in: embeddings of up to this many distinct tokens are kept between calls.
        self._token_cache = TokenEmbeddingCache(token_cache_size) if token_cache_size else None
        self.build()

    # ------------------------------------------------------------------ construction
    def build(self, input_shape: Any = None) -> None:
        self.char_encoder.build()
        self.bilstm.build()
        self.scalar_mix.build()
        self.built = True

    @classmethod
    def from_files(
        cls, options_file: str | os.PathLike, weight_file: str | os.PathLike, **kwargs: Any
    ) -> "_ELMoBase":
        """Loads a published model: a bilm-tf `options.json` and its HDF5 weights.

        Keyword arguments go to the constructor (`output_mode`, `stateful`,
        `fine_tune_bilm`, `trainable`, `name`, `dtype`).
        """
        options = ELMoOptions.from_file(options_file)
        # The file is checked before the model is built, and the variables are
        # created from it one at a time: memory never holds the model twice.
        with open_bilm_weights(weight_file, options) as f, initial_bilm_values(options, f):
            return cls(options=options, **kwargs)

    @classmethod
    def from_preset(cls, name_or_dir: str | os.PathLike, **kwargs: Any) -> "_ELMoBase":
        """Loads a registered preset by name (downloaded once, then cached) or a local
        directory holding `options.json` and the weights. See `keras_elmo.list_presets()`."""
        from keras_elmo import presets

        return presets.load_preset(cls, name_or_dir, **kwargs)

    @classmethod
    def from_tfhub(cls, module_dir: str | os.PathLike, **kwargs: Any) -> "_ELMoBase":
        """Imports a TF-Hub ELMo module directory (`saved_model.pb`, `variables/`),
        including its trained mix weights. `options=` overrides the inferred options."""
        from keras_elmo import weights

        return weights.load_tfhub_module(cls, module_dir, **kwargs)

    def save_preset(self, directory: str | os.PathLike) -> None:
        """Writes `options.json`, the weights and this layer's mix and settings to
        `directory`, loadable again with `from_preset(directory)`."""
        from keras_elmo import presets

        presets.save_preset(self, directory)

    # ------------------------------------------------------------------ inputs
    @property
    def max_chars(self) -> int:
        return self.options.max_characters_per_token

    def _ids_from_int(self, ids: Any) -> Any:
        if not (_is_symbolic(ids) or keras.ops.is_tensor(ids)):
            ids = np.asarray(ids)
        shape = tuple(ids.shape)
        if len(shape) != 3 or shape[-1] not in (None, self.max_chars):
            raise ValueError(
                f"{type(self).__name__}: character ids must have shape [batch, max_len, "
                f"{self.max_chars}], got {list(shape)}."
            )
        if _is_symbolic(ids):
            return ids
        return ops.cast(ids, "int32") if ops.is_tensor(ids) else ops.convert_to_tensor(ids, "int32")

    def _char_ids(self, inputs: Any) -> Any:
        """Character ids [batch, max_len, max_chars] int32 from any accepted input."""
        raise NotImplementedError

    def _input_error(self, inputs: Any) -> TypeError:
        return TypeError(
            f"{type(self).__name__}: unsupported input of type {type(inputs).__name__} "
            f"(dtype {getattr(inputs, 'dtype', None)}); expected {self._expected_input}."
        )

    # ------------------------------------------------------------------ the model
    def call(self, inputs: Any):
        ids = self._char_ids(inputs)
        outputs = self._forward(ids)
        if self.output_mode == "dict":
            return outputs
        return outputs[self.output_mode]

    @float32_products
    def _forward(self, ids: Any, use_state: bool = True) -> dict[str, Any]:
        """All outputs for character ids [batch, T, max_chars]."""
        if self._can_infer(ids):
            return self._infer(ids, use_state)
        o = self.options
        dtype = self.compute_dtype
        mask = ops.any(ops.not_equal(ids, 0), axis=-1)
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        token_mask = ops.cast(mask, dtype)[:, :, None]
        batch, steps = ops.shape(ids)[0], ops.shape(ids)[1]
        # <S> and </S> go through the encoder with the tokens: one call, never empty.
        boundary_ids = ops.convert_to_tensor(chars.boundary_char_ids(self.max_chars), "int32")
        flat = ops.concatenate([boundary_ids, ops.reshape(ids, (-1, self.max_chars))], axis=0)
        embedded = self.char_encoder(flat)
        boundary = embedded[:2]
        word_emb = ops.reshape(embedded[2:], (batch, steps, o.projection_dim)) * token_mask
        stateful = self.stateful and use_state
        initial_state = self._initial_state(batch) if stateful else None
        lstm_outputs, final_state = self.bilstm(word_emb, lengths, boundary, initial_state=initial_state)
        if stateful:
            self._update_state(final_state, batch)
        return self._outputs(word_emb, lstm_outputs, lengths)

    def _outputs(self, word_emb: Any, lstm_outputs: list[Any], lengths: Any) -> dict[str, Any]:
        """The output dict from the biLM's layers (the `ScalarMix` is applied here)."""
        if not self.fine_tune_bilm:
            word_emb = ops.stop_gradient(word_emb)
            lstm_outputs = [ops.stop_gradient(y) for y in lstm_outputs]
        elmo = self.scalar_mix([ops.concatenate([word_emb, word_emb], axis=-1), *lstm_outputs])
        # Mean over the real tokens only; an empty row averages to zeros, not NaN.
        count = ops.cast(ops.maximum(lengths, 1), self.compute_dtype)[:, None]
        default = ops.sum(elmo, axis=1) / count
        outputs = {"word_emb": word_emb}
        for k, y in enumerate(lstm_outputs, start=1):
            outputs[f"lstm_outputs{k}"] = y
        outputs.update(elmo=elmo, default=default, sequence_len=lengths)
        return outputs

    # ------------------------------------------------------------------ the inference path
    #: Each inference call ends by returning the free memory of the C heap (its
    #: temporaries, freed) to the operating system (`recurrence.release_free_memory`, glibc's
    #: `malloc_trim`: 6-15 ms). Without it the process's memory grew from call to
    #: call, by up to 250 MiB at batch 64 (TensorFlow). False skips it.
    RELEASE_FREE_MEMORY = True

    def _can_infer(self, ids: Any) -> bool:
        """Whether `_infer` may run: concrete ids (an eager call, not a traced function
        or a symbolic tensor) and a frozen biLM (nothing to differentiate)."""
        return (
            not self.fine_tune_bilm
            and self.compute_dtype in ("float32", "bfloat16", "float16")
            and not _is_symbolic(ids)
            and _executing_eagerly(ids)
            and len(ids.shape) == 3
            and int(ids.shape[0]) > 0
            and int(ids.shape[1]) > 0
        )

    def _infer(self, ids: Any, use_state: bool) -> dict[str, Any]:
        """`_forward` for concrete ids: each distinct token of the batch goes through
        the character encoder once (and not at all when the opt-in token cache holds
        it), and the biLM runs compiled on bucketed shapes (XLA on JAX, a graph on
        TensorFlow's CPU, XLA on its GPU) or as a fused eager loop on PyTorch.
        The results equal `_forward`'s up to float32 rounding. With
        `RELEASE_FREE_MEMORY`, the C heap's free memory then goes back to the
        operating system (`release_free_memory`)."""
        ids = np.asarray(ops.convert_to_numpy(ids), dtype=np.int32)
        batch = ids.shape[0]
        lengths = np.count_nonzero(ids.any(axis=-1), axis=1)
        table, index, rows = self.char_encoder.encode_unique(ids, self._token_cache)
        stateful = self.stateful and use_state
        initial_state = self._initial_state(batch) if stateful else None
        lstm_outputs, final_state = self.bilstm.infer(table, index, lengths, rows, initial_state, return_state=stateful)
        if stateful:
            self._update_state(final_state, batch)
        word_emb = ops.take(table, ops.convert_to_tensor(index), axis=0)  # the padding row is zeros
        outputs = self._outputs(word_emb, lstm_outputs, ops.convert_to_tensor(lengths.astype(np.int32)))
        if self.RELEASE_FREE_MEMORY:
            release_free_memory()
        return outputs

    def embed(
        self,
        sentences: Sequence[Any],
        output: str = "elmo",
        max_tokens_per_batch: int = 4096,
        max_batch_size: int = 256,
    ) -> list[np.ndarray]:
        """Embeds many sentences in length buckets; results come back in input order.

        Args:
            sentences: raw sentences (split like the layer's input) or token lists.
            output: `"elmo"` [n, 2P], `"default"` [2P], `"word_emb"` [n, P],
                `"lstm_outputs"` [n_layers, n, 2P] or `"layers"` [n_layers + 1, n, 2P]
                (token embedding duplicated, then each LSTM layer).
            max_tokens_per_batch: bounds memory: rows * longest row per batch.
            max_batch_size: most sentences in one batch.

        Returns:
            One numpy array per sentence, trimmed to its own length. Always stateless.
        """
        token_lists = [chars.tokenize(s) if isinstance(s, (str, bytes)) else list(s) for s in sentences]
        return batching.embed(self, token_lists, output, max_tokens_per_batch, max_batch_size)

    # ------------------------------------------------------------------ stateful mode
    def _initial_state(self, batch: int) -> State | None:
        if self._state is None:
            return None
        state = []
        for c, h in self._state:
            old = int(c.shape[1])
            if batch <= old:
                state.append((c[:, :batch], h[:, :batch]))
            else:  # rows that have no previous call start from zeros
                pad = ((0, 0), (0, batch - old), (0, 0))
                state.append((ops.pad(c, pad), ops.pad(h, pad)))
        return state

    def _update_state(self, final_state: State, batch: int) -> None:
        leaf = final_state[0][0]
        if _is_symbolic(leaf) or not _executing_eagerly(leaf):
            raise RuntimeError(
                f"{type(self).__name__}(stateful=True) carries the LSTM state between eager "
                "calls (`layer(x)`); it cannot run inside a traced function such as "
                "`model.predict` or `tf.function`. Call the layer directly, or use "
                "stateful=False."
            )
        if self._state is not None and int(self._state[0][0].shape[1]) > batch:
            # Rows past this batch keep their state, as the original module does.
            final_state = [
                (ops.concatenate([c, old_c[:, batch:]], axis=1), ops.concatenate([h, old_h[:, batch:]], axis=1))
                for (c, h), (old_c, old_h) in zip(final_state, self._state)
            ]
        self._state = [tuple(pair) for pair in final_state]

    def reset_states(self) -> None:
        """Clears the carried LSTM state (`stateful=True`): the next call starts from zeros."""
        self._state = None

    # ------------------------------------------------------------------ Keras plumbing
    @staticmethod
    def _token_dims(inputs: Any) -> tuple[Any, Any]:
        """(batch, max_len) of the output, for symbolic shape inference."""
        raise NotImplementedError

    def compute_output_spec(self, inputs: Any):
        batch, steps = self._token_dims(inputs)
        dtype = self.compute_dtype
        width = 2 * self.options.projection_dim
        spec = {
            "word_emb": keras.KerasTensor((batch, steps, self.options.projection_dim), dtype),
        }
        for k in range(1, self.options.n_layers + 1):
            spec[f"lstm_outputs{k}"] = keras.KerasTensor((batch, steps, width), dtype)
        spec["elmo"] = keras.KerasTensor((batch, steps, width), dtype)
        spec["default"] = keras.KerasTensor((batch, width), dtype)
        spec["sequence_len"] = keras.KerasTensor((batch,), "int32")
        if self.output_mode == "dict":
            return spec
        return spec[self.output_mode]

    @staticmethod
    def _token_mask(inputs: Any) -> Any:
        """[batch, max_len] bool: which positions hold real tokens."""
        raise NotImplementedError

    def compute_mask(self, inputs: Any, mask: Any = None):
        if self.output_mode == "default":
            return None
        if _is_symbolic_input(inputs):
            # A graph node of its own, so the mask stays connected to the model's inputs.
            token_mask = TokenMask(type(self).__name__)(inputs)
        else:
            token_mask = self._token_mask(inputs)
        if self.output_mode == "elmo":
            return token_mask
        return {
            key: (None if key in ("default", "sequence_len") else token_mask)
            for key in self.compute_output_spec(_symbolic_like(inputs, self)).keys()
        }

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            options=self.options.to_dict(),
            output_mode=self.output_mode,
            stateful=self.stateful,
            fine_tune_bilm=self.fine_tune_bilm,
            token_cache_size=self.token_cache_size,
        )
        return config


def _executing_eagerly(x: Any) -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    return True


def _is_symbolic_input(inputs: Any) -> bool:
    return any(_is_symbolic(x) for x in keras.tree.flatten(inputs))


def _symbolic_like(inputs: Any, layer: "_ELMoBase") -> Any:
    """Placeholders that let `compute_output_spec` list the dict output keys."""
    return keras.KerasTensor((None, None, layer.max_chars), "int32")


def _ids_token_mask(ids: Any) -> Any:
    if not (_is_symbolic(ids) or ops.is_tensor(ids)):
        ids = ops.convert_to_tensor(np.asarray(ids), "int32")
    return ops.any(ops.not_equal(ids, 0), axis=-1)


@keras.saving.register_keras_serializable(package="keras_elmo")
class ELMoLayer(_ELMoBase):
    """ELMo on raw sentences, like TF-Hub's `google/elmo` `default` signature.

    Each sentence is split on the space character `' '` only (as TF-Hub does):
    runs of spaces give no empty tokens, while tabs, newlines and other white
    space stay inside tokens. An empty or all-space sentence is a zero-length row.

    Inputs (a batch):
        - sentences: a list or 1-D numpy array of `str`/`bytes` (every backend,
          eager calls), or a `tf.string` tensor [batch] (TensorFlow, also inside
          functional models, `model.fit` and `tf.data`);
        - or character ids, int32 [batch, max_len, 50], from
          `keras_elmo.char_ids(tokens)` (every backend, also in `model.fit`).

    Outputs, with P = `projection_dim` (512 for the original model):
        - `output_mode="elmo"` (default): [batch, max_len, 2P], the learned mix
          `gamma * sum_k softmax(w)_k * layer_k`, layer 0 being the token embedding
          duplicated to 2P;
        - `"default"`: [batch, 2P], the mean of `elmo` over each row's real tokens;
        - `"dict"`: `word_emb` [b, t, P], `lstm_outputs1`, `lstm_outputs2`
          [b, t, 2P] (forward || backward), `elmo`, `default` and `sequence_len` [b].
        Padding positions are exactly 0, and per-token outputs carry a Keras mask.

    Args:
        options: the model's options: an `ELMoOptions`, a bilm-tf options dict or a
            path to `options.json`. Weights start random; use `from_files` to load
            a published model.
        output_mode: `"elmo"`, `"default"` or `"dict"`.
        stateful: if True, row k of each call starts from the LSTM state that row k
            of the previous call ended in, as the original TF-Hub module does
            (eager calls only; `reset_states()` clears it). Default False: every
            call is independent and a sentence's vectors do not depend on its batch.
        fine_tune_bilm: if True, the character encoder and biLSTM weights are
            created trainable. By default they are frozen and only the `ScalarMix`
            (the layer weights and gamma) trains; toggling `layer.trainable`
            never unfreezes the biLM.
        **kwargs: `trainable`, `name`, `dtype` and other `keras.layers.Layer` arguments.

    Example:
        >>> layer = ELMoLayer.from_files("options.json", "weights.hdf5")
        >>> layer(["the cat sat", "a dog"]).shape  # (2, 3, 1024)
    """

    _expected_input = (
        "a batch of sentences (list or 1-D array of strings, or a tf.string tensor [batch]) "
        "or int32 character ids [batch, max_len, 50]"
    )

    def _char_ids(self, inputs: Any) -> Any:
        kind = _dtype_kind(inputs)
        if kind == "int":
            return self._ids_from_int(inputs)
        if kind != "string":
            raise self._input_error(inputs)
        if _is_tf_tensor(inputs):
            if inputs.shape.rank != 1:
                raise ValueError(
                    f"ELMoLayer: sentences must be a 1-D batch [batch], got shape {inputs.shape}."
                )
            tokens, lengths = chars.tf_tokenize(inputs)
            return chars.tf_char_ids(tokens, lengths, self.max_chars)
        sentences = _string_batch(inputs, "ELMoLayer", "sentences", 1)
        return ops.convert_to_tensor(chars.sentences_char_ids(sentences, self.max_chars), "int32")

    @staticmethod
    def _token_dims(inputs: Any) -> tuple[Any, Any]:
        shape = tuple(inputs.shape)
        if _dtype_kind(inputs) == "string":
            return shape[0], None
        return shape[0], shape[1]

    @staticmethod
    def _token_mask(inputs: Any) -> Any:
        if _dtype_kind(inputs) == "int":
            return _ids_token_mask(inputs)
        if _is_tf_tensor(inputs):
            import tensorflow as tf

            tokens, lengths = chars.tf_tokenize(inputs)
            return tf.sequence_mask(lengths, tf.shape(tokens)[1])
        sentences = _string_batch(inputs, "ELMoLayer", "sentences", 1)
        rows = [chars.tokenize(s) for s in sentences]
        return ops.convert_to_tensor(_lengths_mask([len(r) for r in rows]))


@keras.saving.register_keras_serializable(package="keras_elmo")
class ELMoTokensLayer(_ELMoBase):
    """ELMo on tokenized sentences, like TF-Hub's `google/elmo` `tokens` signature.

    Inputs:
        - `{"tokens": [batch, max_len] strings, "sequence_len": [batch] int32}`:
          tokens at or past a row's `sequence_len` are ignored, whatever they hold.
          Strings as numpy arrays or lists (every backend, eager calls) or
          `tf.string` tensors (TensorFlow, also in functional models and `fit`).
          `sequence_len` may be left out when every token is real.
        - or character ids, int32 [batch, max_len, 50], from `keras_elmo.char_ids`.

    Outputs and arguments are those of `ELMoLayer`.
    """

    _expected_input = (
        '{"tokens": [batch, max_len] strings, "sequence_len": [batch] int32} '
        "or int32 character ids [batch, max_len, 50]"
    )

    @staticmethod
    def _split(inputs: Mapping[str, Any]) -> tuple[Any, Any]:
        unknown = sorted(set(inputs) - {"tokens", "sequence_len"})
        if "tokens" not in inputs or unknown:
            raise ValueError(
                "ELMoTokensLayer: the input dict must have the key 'tokens' and optionally "
                f"'sequence_len'; got keys {sorted(inputs)}."
            )
        return inputs["tokens"], inputs.get("sequence_len")

    def _char_ids(self, inputs: Any) -> Any:
        if not isinstance(inputs, Mapping):
            if _dtype_kind(inputs) == "int":
                return self._ids_from_int(inputs)
            raise self._input_error(inputs)
        tokens, lengths = self._split(inputs)
        if _dtype_kind(tokens) != "string":
            raise TypeError(
                f"ELMoTokensLayer: 'tokens' must be strings [batch, max_len], got dtype "
                f"{getattr(tokens, 'dtype', type(tokens).__name__)}."
            )
        if _is_tf_tensor(tokens):
            if tokens.shape.rank != 2:
                raise ValueError(
                    f"ELMoTokensLayer: 'tokens' must have shape [batch, max_len], got {tokens.shape}."
                )
            if lengths is not None and _dtype_kind(lengths) != "int":
                raise TypeError(f"ELMoTokensLayer: 'sequence_len' must be integers, got {lengths.dtype}.")
            return chars.tf_char_ids(tokens, lengths, self.max_chars)
        tokens = _string_batch(tokens, "ELMoTokensLayer", "'tokens'", 2)
        if lengths is not None:
            lengths = ops.convert_to_numpy(lengths) if ops.is_tensor(lengths) else np.asarray(lengths)
        return ops.convert_to_tensor(chars.char_ids(tokens, lengths, self.max_chars), "int32")

    @staticmethod
    def _token_dims(inputs: Any) -> tuple[Any, Any]:
        if isinstance(inputs, Mapping):
            shape = tuple(ELMoTokensLayer._split(inputs)[0].shape)
            return shape[0], shape[1]
        shape = tuple(inputs.shape)
        return shape[0], shape[1]

    @staticmethod
    def _token_mask(inputs: Any) -> Any:
        if not isinstance(inputs, Mapping):
            return _ids_token_mask(inputs)
        tokens, lengths = ELMoTokensLayer._split(inputs)
        if _is_tf_tensor(tokens):
            import tensorflow as tf

            max_len = tf.shape(tokens)[1]
            if lengths is None:
                return tf.ones(tf.shape(tokens), tf.bool)
            return tf.sequence_mask(lengths, max_len)
        tokens = _string_batch(tokens, "ELMoTokensLayer", "'tokens'", 2)
        if lengths is None:
            return ops.convert_to_tensor(np.ones(tokens.shape, bool))
        lengths = ops.convert_to_numpy(lengths) if ops.is_tensor(lengths) else np.asarray(lengths)
        return ops.convert_to_tensor(_lengths_mask(lengths, tokens.shape[1]))


def _string_batch(x: Any, layer: str, what: str, rank: int) -> np.ndarray:
    """A numpy object array of the expected rank, or a clear error."""
    if isinstance(x, (str, bytes)):
        raise ValueError(
            f"{layer}: {what} must be a batch (rank {rank}), got a single string; wrap it in a list."
        )
    array = np.asarray(x, dtype=object)
    if array.ndim != rank:
        raise ValueError(
            f"{layer}: {what} must have rank {rank}, got shape {list(array.shape)}."
        )
    for value in array.reshape(-1):
        if not isinstance(value, (str, bytes, np.str_, np.bytes_)):
            raise TypeError(f"{layer}: {what} must hold strings, got {type(value).__name__} {value!r}.")
    return array


def _lengths_mask(lengths: Any, max_len: int | None = None) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    max_len = int(lengths.max(initial=0)) if max_len is None else max_len
    return np.arange(max_len)[None, :] < lengths[:, None]


@keras.saving.register_keras_serializable(package="keras_elmo")
class TokenMask(keras.Operation):
    """[batch, max_len] bool: which positions of an ELMo layer's input hold real tokens.

    The layers' `compute_mask` uses it on symbolic inputs, so that the mask is a
    node of the model's graph (as `Embedding(mask_zero=True)`'s is), also for
    string inputs, for which no `keras.ops` expression exists.

    Args:
        layer_class: `"ELMoLayer"` or `"ELMoTokensLayer"`: which input format to read.
    """

    def __init__(self, layer_class: str = "ELMoLayer", name: str | None = None):
        super().__init__(name=name)
        if layer_class not in _LAYER_CLASSES:
            raise ValueError(f"`layer_class` must be one of {sorted(_LAYER_CLASSES)}, got {layer_class!r}.")
        self.layer_class = layer_class

    def call(self, inputs: Any):
        return _LAYER_CLASSES[self.layer_class]._token_mask(inputs)

    def compute_output_spec(self, inputs: Any):
        return keras.KerasTensor(_LAYER_CLASSES[self.layer_class]._token_dims(inputs), "bool")

    def get_config(self) -> dict[str, Any]:
        return {"layer_class": self.layer_class, "name": self.name}


_LAYER_CLASSES = {"ELMoLayer": ELMoLayer, "ELMoTokensLayer": ELMoTokensLayer}
