"""Tokens to character ids, exactly as bilm-tf's `UnicodeCharsVocabulary`.

A token becomes `max_chars` (50) ids: beginning-of-word, the token's UTF-8 bytes
(truncated to `max_chars - 2` bytes), end-of-word, then in-token padding. Every id
is shifted by +1 so that 0 is free for *padding tokens* (positions past a
sentence's end), whose ids are all 0. The literal tokens `<S>` and `</S>` map to
the sentence-boundary characters, as in bilm-tf and AllenNLP.

Two implementations produce the same ids: a numpy one (`char_ids`, used eagerly on
every backend) and a `tf.strings` one (`tf_char_ids`, used inside TensorFlow
graphs and `tf.data`). Tests check that they agree.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import numpy as np

#: Characters ids before the +1 offset (bytes are 0..255).
BOS_CHAR = 256  # beginning of sentence
EOS_CHAR = 257  # end of sentence
BOW_CHAR = 258  # beginning of word
EOW_CHAR = 259  # end of word
PAD_CHAR = 260  # padding inside a token
#: Characters per token in every published model.
MAX_CHARS = 50
#: The sentence-boundary tokens.
BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


def _special_ids(char: int, max_chars: int) -> np.ndarray:
    ids = np.full(max_chars, PAD_CHAR + 1, dtype=np.int32)
    ids[:3] = (BOW_CHAR + 1, char + 1, EOW_CHAR + 1)
    return ids


def boundary_char_ids(max_chars: int = MAX_CHARS) -> np.ndarray:
    """Ids of `<S>` and `</S>`, shape [2, max_chars]."""
    return np.stack([_special_ids(BOS_CHAR, max_chars), _special_ids(EOS_CHAR, max_chars)])


@functools.lru_cache(maxsize=1 << 16)
def _token_ids(token: bytes, max_chars: int) -> np.ndarray:
    if token == BOS_TOKEN.encode():
        return _special_ids(BOS_CHAR, max_chars)
    if token == EOS_TOKEN.encode():
        return _special_ids(EOS_CHAR, max_chars)
    body = np.frombuffer(token[: max_chars - 2], dtype=np.uint8).astype(np.int32)
    ids = np.full(max_chars, PAD_CHAR + 1, dtype=np.int32)
    ids[0] = BOW_CHAR + 1
    ids[1 : 1 + len(body)] = body + 1
    ids[1 + len(body)] = EOW_CHAR + 1
    ids.flags.writeable = False  # shared through the cache
    return ids


def _as_bytes(token: Any, where: str) -> bytes:
    if isinstance(token, str):
        # "ignore" drops lone surrogates, as bilm-tf's encode does.
        return token.encode("utf-8", "ignore")
    if isinstance(token, (bytes, np.bytes_)):
        return bytes(token)
    raise TypeError(f"{where} must be a string, got {type(token).__name__}: {token!r}.")


def token_char_ids(token: str | bytes, max_chars: int = MAX_CHARS) -> np.ndarray:
    """Character ids of one token, shape [max_chars] int32 (with the +1 offset)."""
    return _token_ids(_as_bytes(token, "token"), max_chars).copy()


def tokenize(sentence: str | bytes) -> list[str]:
    """Splits a sentence on the space character only, as TF-Hub's ELMo does.

    Runs of spaces give no empty tokens; tabs, newlines and other white space
    stay inside tokens.
    """
    if isinstance(sentence, (bytes, np.bytes_)):
        sentence = bytes(sentence).decode("utf-8", "replace")
    if not isinstance(sentence, str):
        raise TypeError(f"a sentence must be a string, got {type(sentence).__name__}: {sentence!r}.")
    return [t for t in sentence.split(" ") if t]


def _check_sequence_len(sequence_len: Any, batch: int, max_len: int) -> np.ndarray:
    lengths = np.asarray(sequence_len)
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"`sequence_len` must hold integers, got dtype {lengths.dtype}.")
    if lengths.shape != (batch,):
        raise ValueError(
            f"`sequence_len` must have shape [batch] = [{batch}], got {list(lengths.shape)}."
        )
    if batch and (lengths.min() < 0 or lengths.max() > max_len):
        raise ValueError(
            f"`sequence_len` values must be in [0, max_len={max_len}], got "
            f"min {lengths.min()} and max {lengths.max()}."
        )
    return lengths.astype(np.int64)


def char_ids(
    tokens: Sequence[Sequence[str]] | np.ndarray,
    sequence_len: Sequence[int] | np.ndarray | None = None,
    max_chars: int = MAX_CHARS,
) -> np.ndarray:
    """Character ids of a batch of tokenized sentences: int32 [batch, max_len, max_chars].

    Args:
        tokens: a list of token lists (rows may differ in length), or a string
            array [batch, max_len] (`str`, `bytes` or object dtype).
        sequence_len: with a string array, the number of real tokens in each
            row ([batch] ints); tokens at or past it are ignored, whatever they
            contain. Defaults to every token being real.
        max_chars: characters per token (50 for every published model).

    Returns:
        int32 ids with the +1 offset; padding positions are all 0.
    """
    if isinstance(tokens, np.ndarray):
        if tokens.dtype.kind not in "USO":
            raise TypeError(f"`tokens` must be strings, got an array of dtype {tokens.dtype}.")
        if tokens.ndim != 2:
            raise ValueError(
                f"`tokens` must be a [batch, max_len] string array, got shape {list(tokens.shape)}."
            )
        batch, max_len = tokens.shape
        lengths = (
            np.full(batch, max_len)
            if sequence_len is None
            else _check_sequence_len(sequence_len, batch, max_len)
        )
        rows: Iterable[Sequence[Any]] = (tokens[b, : lengths[b]] for b in range(batch))
    else:
        if isinstance(tokens, (str, bytes)):
            raise TypeError(
                "`tokens` must be a list of token lists, got a single string; "
                "use `tokenize(sentence)` or wrap it: [sentence.split()]."
            )
        rows = [list(row) for row in tokens]
        for i, row in enumerate(rows):
            if isinstance(row, (str, bytes)):
                raise TypeError(f"`tokens[{i}]` must be a list of tokens, got a string {row!r}.")
        if sequence_len is not None:
            lengths = _check_sequence_len(sequence_len, len(rows), max((len(r) for r in rows), default=0))
            rows = [row[:n] for row, n in zip(rows, lengths)]
        rows = list(rows)
        batch, max_len = len(rows), max((len(r) for r in rows), default=0)
    out = np.zeros((batch, max_len, max_chars), dtype=np.int32)
    for b, row in enumerate(rows):
        for t, token in enumerate(row):
            out[b, t] = _token_ids(_as_bytes(token, f"`tokens[{b}][{t}]`"), max_chars)
    return out


def sentences_char_ids(sentences: Sequence[str] | np.ndarray, max_chars: int = MAX_CHARS) -> np.ndarray:
    """Character ids of raw sentences, split with `tokenize`: int32 [batch, max_len, max_chars]."""
    if isinstance(sentences, (str, bytes)):
        raise TypeError("`sentences` must be a batch (list or array) of strings, got one string.")
    return char_ids([tokenize(s) for s in np.asarray(sentences, dtype=object).reshape(-1)], max_chars=max_chars)


# ----------------------------------------------------------------------------------------
# The tf.strings path. TensorFlow is imported lazily: JAX and PyTorch users never need it.


def tf_tokenize(sentences):
    """`tokenize` for a tf.string tensor [batch]: returns (tokens [b, t], sequence_len [b])."""
    import tensorflow as tf

    ragged = tf.strings.split(sentences, sep=" ")
    ragged = tf.ragged.boolean_mask(ragged, tf.strings.length(ragged) > 0)
    return ragged.to_tensor(default_value=""), tf.cast(ragged.row_lengths(), tf.int32)


def tf_char_ids(tokens, sequence_len=None, max_chars: int = MAX_CHARS):
    """`char_ids` for a tf.string tensor [batch, max_len]: int32 [batch, max_len, max_chars]."""
    import tensorflow as tf

    tokens = tf.convert_to_tensor(tokens)
    if tokens.dtype != tf.string:
        raise TypeError(f"`tokens` must be a tf.string tensor, got {tokens.dtype.name}.")
    shape = tf.shape(tokens)
    batch, max_len = shape[0], shape[1]
    if sequence_len is None:
        real = tf.ones_like(tokens, dtype=tf.bool)
    else:
        sequence_len = tf.cast(sequence_len, tf.int32)
        tf.debugging.assert_non_negative(sequence_len, message="`sequence_len` must be >= 0")
        tf.debugging.assert_less_equal(
            sequence_len, max_len, message="`sequence_len` must be <= max_len (tokens.shape[1])"
        )
        real = tf.sequence_mask(sequence_len, max_len)
    flat = tf.reshape(tokens, [-1])
    body = tf.strings.substr(flat, 0, max_chars - 2, unit="BYTE")
    chars = tf.strings.bytes_split(body)  # ragged [n, bytes] of 1-byte strings
    values = tf.cast(tf.reshape(tf.io.decode_raw(chars.flat_values, tf.uint8), [-1]), tf.int32)
    byte_ids = chars.with_flat_values(values + 1)
    n = tf.shape(flat)[0]
    bow = tf.fill([n, 1], BOW_CHAR + 1)
    eow = tf.fill([n, 1], EOW_CHAR + 1)
    word = tf.concat([bow, byte_ids, eow], axis=1).to_tensor(
        default_value=PAD_CHAR + 1, shape=[None, max_chars]
    )
    bounds = tf.constant(boundary_char_ids(max_chars))
    word = tf.where(tf.equal(flat, BOS_TOKEN)[:, None], bounds[0][None, :], word)
    word = tf.where(tf.equal(flat, EOS_TOKEN)[:, None], bounds[1][None, :], word)
    word = tf.where(tf.reshape(real, [-1])[:, None], word, tf.zeros_like(word))
    return tf.reshape(word, [batch, max_len, max_chars])
