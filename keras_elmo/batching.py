"""Embedding many sentences: length buckets under a token budget, results in input order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from keras_elmo import chars
from keras_elmo.recurrence import bucket_floor

if TYPE_CHECKING:
    from keras_elmo.layers import _ELMoBase

#: Outputs `iter_embed` can return per sentence.
PER_TOKEN_OUTPUTS = ("word_emb", "lstm_outputs", "elmo")


def length_batches(
    lengths: Sequence[int], max_tokens_per_batch: int = 4096, max_batch_size: int = 256
) -> list[np.ndarray]:
    """Groups sentence indices into batches of similar length.

    Sentences are sorted by length (stable, so equal lengths keep input order)
    and cut into batches whose padded size `rows * longest` stays within
    `max_tokens_per_batch` (a longer sentence gets a batch of its own), so memory
    is bounded by the budget rather than by the longest sentence times the batch.
    Full batches have a row count on the `recurrence.bucket` ladder, which the
    compiled backends pad batches to: no rows are computed only to be dropped.
    """
    if max_tokens_per_batch < 1 or max_batch_size < 1:
        raise ValueError(
            "`max_tokens_per_batch` and `max_batch_size` must be >= 1, got "
            f"{max_tokens_per_batch} and {max_batch_size}."
        )
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, current = [], []
    for index in order:
        n = max(int(lengths[index]), 1)  # ascending: the longest of the batch so far
        limit = max(1, min(max_batch_size, max_tokens_per_batch // n))
        while current and len(current) + 1 > limit:
            # Close a batch of a ladder size; the rest (no longer) go on with this one.
            cut = bucket_floor(len(current))
            batches.append(np.asarray(current[:cut]))
            current = current[cut:]
        current.append(int(index))
    if current:
        batches.append(np.asarray(current))
    return batches


def iter_embed(
    layer: "_ELMoBase",
    token_lists: Sequence[Sequence[str]],
    outputs: Sequence[str] = ("elmo",),
    max_tokens_per_batch: int = 4096,
    max_batch_size: int = 256,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yields `(index, {output: array})` for every sentence, one length bucket at a time.

    Per-token outputs are trimmed to the sentence's length: `word_emb` [n, P],
    `lstm_outputs` [n_layers, n, 2P], `elmo` [n, 2P]; `default` is [2P] and
    `layers` [n_layers + 1, n, 2P] stacks the token embedding (duplicated) and
    every LSTM layer, as AllenNLP's `elmo` command writes them. Always stateless.
    """
    from keras import ops

    allowed = (*PER_TOKEN_OUTPUTS, "layers", "default")
    for name in outputs:
        if name not in allowed:
            raise ValueError(f"unknown output {name!r}; expected some of {list(allowed)}.")
    lengths = [len(t) for t in token_lists]
    for batch in length_batches(lengths, max_tokens_per_batch, max_batch_size):
        ids = chars.char_ids([token_lists[i] for i in batch], max_chars=layer.max_chars)
        result = layer._forward(ops.convert_to_tensor(ids, "int32"), use_state=False)
        result = {k: ops.convert_to_numpy(v) for k, v in result.items()}
        n_layers = layer.options.n_layers
        lstm = [result[f"lstm_outputs{k}"] for k in range(1, n_layers + 1)]
        for row, index in enumerate(batch):
            n = lengths[index]
            item = {}
            for name in outputs:
                if name == "default":
                    item[name] = result["default"][row]
                elif name == "lstm_outputs":
                    item[name] = np.stack([y[row, :n] for y in lstm])
                elif name == "layers":
                    emb = result["word_emb"][row, :n]
                    item[name] = np.stack([np.concatenate([emb, emb], -1)] + [y[row, :n] for y in lstm])
                else:
                    item[name] = result[name][row, :n]
            yield int(index), item


def embed(
    layer: "_ELMoBase",
    token_lists: Sequence[Sequence[str]],
    output: str = "elmo",
    max_tokens_per_batch: int = 4096,
    max_batch_size: int = 256,
) -> list[np.ndarray]:
    """`iter_embed` collected into a list in the caller's order (one output)."""
    results: list[Any] = [None] * len(token_lists)
    for index, item in iter_embed(layer, token_lists, (output,), max_tokens_per_batch, max_batch_size):
        results[index] = item[output]
    return results
