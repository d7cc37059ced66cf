"""The acceptance core: the two reference models reproduce the original bilm-tf outputs.

Expected outputs were computed by bilm-tf with a stateful LSTM over 10 batches of
3 sentences (see ../shared/fixtures/README.md), so the full check runs
`stateful=True` in that order; batch 0 also checks the stateless default.
Run once per Keras backend.
"""

import json

import h5py
import keras
import numpy as np
import pytest

import keras_elmo
from conftest import FIXTURE_MODELS

SENTENCE_FILES = {"bilm-tf": "lm_embeddings_sentences.json", "allennlp-elmo": "sentences.json"}


def _model_files(fixtures_dir, name):
    folder = fixtures_dir / name
    return folder / "options.json", folder / "lm_weights.hdf5"


def _batches(fixtures_dir, name):
    with open(fixtures_dir / name / SENTENCE_FILES[name]) as f:
        sentences = json.load(f)
    return [[sentences[k][i] for k in range(3)] for i in range(10)]


def _expected(fixtures_dir, name, batch_index):
    rows = []
    for k in range(3):
        with h5py.File(fixtures_dir / name / f"lm_embeddings_{k}.hdf5", "r") as f:
            e = f[str(batch_index)][...]
        rows.append(np.concatenate([e[0], e[1]], axis=-1))
    return rows


def _assert_rows_match(top, expected, batch_index):
    for k, e in enumerate(expected):
        actual = top[k, : e.shape[0]]
        assert np.allclose(actual, e, rtol=1e-5, atol=1e-6), (
            f"batch {batch_index} row {k}: max abs diff {np.abs(actual - e).max():.3g}"
        )
        assert not top[k, e.shape[0] :].any(), "padding positions must be exactly 0"


@pytest.mark.parametrize("name", FIXTURE_MODELS)
@pytest.mark.parametrize("layer_cls", ["ELMoLayer", "ELMoTokensLayer"])
def test_stateful_top_layer_matches_original(fixtures_dir, name, layer_cls):
    options, weights = _model_files(fixtures_dir, name)
    layer = getattr(keras_elmo, layer_cls).from_files(
        options, weights, output_mode="dict", stateful=True
    )
    for i, batch in enumerate(_batches(fixtures_dir, name)):
        if layer_cls == "ELMoLayer":
            out = layer(batch)  # raw sentences, split on spaces
        else:
            tokens = [s.split(" ") for s in batch]
            width = max(len(t) for t in tokens)
            padded = np.array([t + ["<junk>"] * (width - len(t)) for t in tokens], dtype=object)
            out = layer({"tokens": padded, "sequence_len": np.array([len(t) for t in tokens], "int32")})
        top = keras.ops.convert_to_numpy(out["lstm_outputs2"])
        _assert_rows_match(top, _expected(fixtures_dir, name, i), i)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's loop with batched directions")
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_torch_batched_directions_match_original(fixtures_dir, name, monkeypatch):
    """`BiLSTM.TORCH_BATCHED_DIRECTIONS` (a GPU's default) on this machine's device."""
    from keras_elmo.bilstm import BiLSTM

    monkeypatch.setattr(BiLSTM, "TORCH_BATCHED_DIRECTIONS", True)
    layer = keras_elmo.ELMoLayer.from_files(*_model_files(fixtures_dir, name), output_mode="dict", stateful=True)
    for i, batch in enumerate(_batches(fixtures_dir, name)):
        top = keras.ops.convert_to_numpy(layer(batch)["lstm_outputs2"])
        _assert_rows_match(top, _expected(fixtures_dir, name, i), i)


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_first_batch_matches_stateless(fixtures_dir, name):
    layer = keras_elmo.ELMoLayer.from_files(*_model_files(fixtures_dir, name), output_mode="dict")
    batch = _batches(fixtures_dir, name)[0]
    ids = keras_elmo.char_ids([s.split() for s in batch])
    top = keras.ops.convert_to_numpy(layer(ids)["lstm_outputs2"])
    _assert_rows_match(top, _expected(fixtures_dir, name, 0), 0)
    # Stateless: the second batch does not start from the first one's state.
    second = keras_elmo.char_ids([s.split() for s in _batches(fixtures_dir, name)[1]])
    top = keras.ops.convert_to_numpy(layer(second)["lstm_outputs2"])
    expected = _expected(fixtures_dir, name, 1)
    assert not np.allclose(top[0, : expected[0].shape[0]], expected[0], atol=1e-4)


def test_reset_states_restarts_from_zero(fixtures_dir):
    name = "allennlp-elmo"
    layer = keras_elmo.ELMoLayer.from_files(
        *_model_files(fixtures_dir, name), output_mode="dict", stateful=True
    )
    batches = _batches(fixtures_dir, name)
    layer(batches[0])
    layer.reset_states()
    top = keras.ops.convert_to_numpy(layer(batches[0])["lstm_outputs2"])
    _assert_rows_match(top, _expected(fixtures_dir, name, 0), 0)


def test_character_encoder_matches_vocabulary_embeddings(fixtures_dir):
    folder = fixtures_dir / "allennlp-elmo"
    with open(folder / "vocab_test.txt", encoding="utf-8") as f:
        vocab = f.read().rstrip("\n").split("\n")
    with h5py.File(folder / "elmo_token_embeddings.hdf5", "r") as f:
        expected = f["embedding"][...]
    assert len(vocab) == expected.shape[0] and "<S>" in vocab and "</S>" in vocab
    layer = keras_elmo.ELMoLayer.from_files(*_model_files(fixtures_dir, "allennlp-elmo"))
    ids = keras_elmo.char_ids([[w] for w in vocab])
    actual = keras.ops.convert_to_numpy(layer.char_encoder(ids))[:, 0]
    assert np.allclose(actual, expected, rtol=1e-5, atol=1e-6), np.abs(actual - expected).max()
    # The same through the layer's `word_emb` output.
    dict_layer = keras_elmo.ELMoLayer.from_files(
        *_model_files(fixtures_dir, "allennlp-elmo"), output_mode="dict"
    )
    word_emb = keras.ops.convert_to_numpy(dict_layer(ids[:40])["word_emb"])[:, 0]
    assert np.allclose(word_emb, expected[:40], rtol=1e-5, atol=1e-6)


def test_skip_connections_follow_the_options(fixtures_dir):
    assert not keras_elmo.ELMoOptions.from_file(fixtures_dir / "bilm-tf" / "options.json").use_skip_connections
    assert keras_elmo.ELMoOptions.from_file(fixtures_dir / "allennlp-elmo" / "options.json").use_skip_connections
