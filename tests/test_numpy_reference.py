"""Checks the numpy reference (tests/numpy_reference.py) against outputs of the original bilm-tf code."""
import json

import h5py
import numpy as np
import pytest

import numpy_reference as ref  # noqa: E402
from conftest import FIXTURES, require_fixtures  # noqa: E402


@pytest.fixture(autouse=True)
def _fixtures():
    require_fixtures()


MODELS = [("bilm-tf", "lm_embeddings_sentences.json"), ("allennlp-elmo", "sentences.json")]


def _load_model(name):
    folder = FIXTURES / name
    with open(folder / "options.json") as f:
        options = json.load(f)
    return options, ref.load_weights(folder / "lm_weights.hdf5")


def test_token_char_ids():
    ids = ref.token_char_ids("ab")
    assert ids.shape == (50,) and ids.dtype == np.int32
    assert list(ids[:5]) == [259, 98, 99, 260, 261] and (ids[4:] == 261).all()
    assert list(ref.token_char_ids("<S>")[:4]) == [259, 257, 260, 261]
    assert list(ref.token_char_ids("</S>")[:4]) == [259, 258, 260, 261]
    long = ref.token_char_ids("x" * 60)
    assert long[0] == 259 and (long[1:49] == ord("x") + 1).all() and long[49] == 260

    ids, lengths = ref.sentences_char_ids([["a"], ["b", "c"]], add_boundaries=True)
    assert ids.shape == (2, 4, 50) and list(lengths) == [3, 4]
    assert (ids[0, 2] == ref.token_char_ids("</S>")).all() and (ids[0, 3] == 0).all()


@pytest.mark.parametrize("name,sentence_file", MODELS)
def test_stateful_lstm_outputs(name, sentence_file):
    options, weights = _load_model(name)
    folder = FIXTURES / name
    with open(folder / sentence_file) as f:
        sentences = json.load(f)
    expected = [h5py.File(folder / f"lm_embeddings_{k}.hdf5", "r") for k in range(3)]

    state = None
    for i in range(len(sentences[0])):
        batch = [sentences[k][i].split() for k in range(3)]
        out = ref.bilm_forward(weights, options, batch, initial_state=state)
        state = out["final_state"]
        for k, tokens in enumerate(batch):
            want = np.concatenate(list(expected[k][str(i)][...]), axis=-1)
            got = out["lstm_outputs2"][k]
            assert want.shape == (len(tokens), 32)
            np.testing.assert_allclose(got[: len(tokens)], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name} batch {i} row {k}")
            assert (got[len(tokens):] == 0).all()


def test_char_encoder_token_embeddings():
    options, weights = _load_model("allennlp-elmo")
    with open(FIXTURES / "allennlp-elmo" / "vocab_test.txt", encoding="utf-8") as f:
        tokens = f.read().rstrip("\n").split("\n")
    with h5py.File(FIXTURES / "allennlp-elmo" / "elmo_token_embeddings.hdf5", "r") as f:
        want = f["embedding"][...]
    assert len(tokens) == want.shape[0] == 458
    ids = np.stack([ref.token_char_ids(t) for t in tokens])[None]
    got = ref.char_encoder(weights, options, ids)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("projection_dim,skip,n_highway", [(16, True, 0), (32, False, 1)])
def test_random_weights_roundtrip(tmp_path, projection_dim, skip, n_highway):
    options = {
        "lstm": {"dim": 32, "projection_dim": projection_dim, "n_layers": 3, "cell_clip": 3,
                 "proj_clip": 3, "use_skip_connections": skip},
        "char_cnn": {"embedding": {"dim": 5}, "filters": [[1, 8], [3, 8]], "n_highway": n_highway,
                     "n_characters": 262, "activation": "tanh"},
    }
    weights = ref.random_weights(options, seed=0)
    assert weights["char_embed"].shape == (261, 5)
    ref.write_weights(tmp_path / "w.hdf5", weights)
    loaded = ref.load_weights(tmp_path / "w.hdf5")
    assert loaded.keys() == weights.keys()

    sentences = [["Hello", "world", "!"], ["Hi"]]
    out = ref.bilm_forward(loaded, options, sentences)
    width = 2 * min(projection_dim, 32)
    assert out["word_emb"].shape == (2, 3, projection_dim)
    for i in (1, 2, 3):
        y = out[f"lstm_outputs{i}"]
        assert y.shape == (2, 3, width) and (y[1, 1:] == 0).all() and np.abs(y[0]).std() > 1e-2
    # A row's result does not depend on the other rows of the batch.
    alone = ref.bilm_forward(loaded, options, sentences[1:])
    np.testing.assert_allclose(alone["lstm_outputs3"][0], out["lstm_outputs3"][1, :1], atol=1e-12)
