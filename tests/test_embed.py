"""`keras_elmo.embed`: corpus -> HDF5 in AllenNLP's layout, resume, reading and merging.

Uses a tiny random model (tests/numpy_reference.py) so it runs on every backend in seconds;
the `all` layers are checked against the independent numpy reference.
"""

import json

import h5py
import numpy as np
import pytest

import numpy_reference as ref  # noqa: E402
from keras_elmo import batching, embed
from keras_elmo.layers import ELMoLayer

TINY_OPTIONS = {
    "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
             "use_skip_connections": True},
    "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 8], [3, 8]], "n_highway": 1,
                 "n_characters": 262, "max_characters_per_token": 50, "activation": "relu"},
}
WIDTH = 16  # 2P

# Empty and all-space lines, runs of spaces, a tab inside a token, a repeated sentence,
# non-ASCII text and a long line: the cases the command must handle.
LINES = [
    "The cat sat on the mat .",
    "",
    "Hello   world !",
    "naïve café 北京 tab\there",
    "The cat sat on the mat .",
    "   ",
    "a",
    " ".join(f"w{i}" for i in range(12)),
    "short one",
    "Ünïcödé ẞ and <S> </S> tokens",
]


def make_tiny_model(folder, seed=0):
    """Writes options.json + weights.hdf5 of a tiny random model; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    options_path, weights_path = folder / "options.json", folder / "weights.hdf5"
    options_path.write_text(json.dumps(TINY_OPTIONS))
    ref.write_weights(weights_path, ref.random_weights(TINY_OPTIONS, seed))
    return options_path, weights_path


def write_lines(path, lines, ending="\n"):
    path.write_bytes("".join(line + ending for line in lines).encode("utf-8"))
    return path


def read_h5(path):
    """{name: value} of every dataset, with sentence_to_index decoded."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in f:
            if name == "sentence_to_index":
                out[name] = json.loads(f[name][0])
            else:
                out[name] = f[name][()]
        out["@attrs"] = {k: f.attrs[k] for k in f.attrs}
    return out


def assert_same_embeddings(a, b, exact=False):
    assert sorted(k for k in a if k != "@attrs") == sorted(k for k in b if k != "@attrs")
    for k in a:
        if k == "@attrs":
            continue
        if k == "sentence_to_index":
            assert a[k] == b[k]
        elif exact:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k].shape == b[k].shape, k
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def tiny_layer(tiny_model):
    return ELMoLayer.from_files(*tiny_model)


@pytest.fixture
def corpus(tmp_path):
    return write_lines(tmp_path / "corpus.txt", LINES)


def test_all_layers_match_numpy_reference_and_allennlp_layout(tiny_model, tiny_layer, corpus, tmp_path):
    out = tmp_path / "out.hdf5"
    summary = embed.embed_file(corpus, out, tiny_layer, progress=False)
    assert summary.sentences == len(LINES) and summary.output == out
    assert summary.tokens == sum(len([t for t in line.split(" ") if t]) for line in LINES)
    assert not (tmp_path / "out.hdf5.partial").exists()

    weights = ref.load_weights(tiny_model[1])
    data = read_h5(out)
    assert sorted(k for k in data if not k.startswith("@")) == sorted(
        [str(i) for i in range(len(LINES))] + ["sentence_to_index"]
    )
    for i, line in enumerate(LINES):
        tokens = [t for t in line.split(" ") if t]
        value = data[str(i)]
        assert value.dtype == np.float32 and value.shape == (3, len(tokens), WIDTH), (i, value.shape)
        if not tokens:
            continue
        want = ref.bilm_forward(weights, TINY_OPTIONS, [tokens])
        emb = want["word_emb"][0]
        expected = np.stack([np.concatenate([emb, emb], -1), want["lstm_outputs1"][0], want["lstm_outputs2"][0]])
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5, err_msg=line)
    # AllenNLP's map: text (line without its newline) -> index as a string; the last
    # index for a repeated sentence.
    s2i = data["sentence_to_index"]
    assert s2i["The cat sat on the mat ."] == "4"
    assert s2i[""] == "1" and s2i["   "] == "5" and s2i["naïve café 北京 tab\there"] == "3"
    assert len(s2i) == len(set(LINES))
    with h5py.File(out, "r") as f:
        ds = f["sentence_to_index"]
        assert ds.shape == (1,) and h5py.check_string_dtype(ds.dtype) is not None
        assert json.loads(f.attrs["keras_elmo"])["output_mode"] == "all"


@pytest.mark.parametrize("mode", ["top", "average", "elmo", "default"])
def test_output_modes(tiny_layer, corpus, tmp_path, mode):
    layers = tiny_layer.embed(LINES, "layers")
    elmo = tiny_layer.embed(LINES, "elmo")
    default = tiny_layer.embed(LINES, "default")
    out = tmp_path / f"{mode}.hdf5"
    embed.embed_file(corpus, out, tiny_layer, output_mode=mode, progress=False)
    data = read_h5(out)
    for i, line in enumerate(LINES):
        n = len([t for t in line.split(" ") if t])
        want = {
            "top": lambda: layers[i][-1],
            "average": lambda: layers[i].mean(axis=0),
            "elmo": lambda: elmo[i],
            "default": lambda: default[i],
        }[mode]()
        got = data[str(i)]
        assert got.dtype == np.float32
        assert got.shape == ((WIDTH,) if mode == "default" else (n, WIDTH))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # An empty sentence: zero-length, or a zero vector with `default`.
    if mode == "default":
        assert (data["1"] == 0).all()
    else:
        assert data["1"].shape == (0, WIDTH)


def test_small_budget_buckets_keep_keys_and_values(tiny_layer, corpus, tmp_path):
    big = tmp_path / "big.hdf5"
    small = tmp_path / "small.hdf5"
    embed.embed_file(corpus, big, tiny_layer, progress=False)
    # Buckets of 4 sentences sorted by length: the rows come back out of order.
    embed.embed_file(corpus, small, tiny_layer, max_batch_size=4, progress=False)
    assert_same_embeddings(read_h5(big), read_h5(small))


def test_line_endings_bom_and_no_final_newline(tiny_layer, tmp_path):
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"\xef\xbb\xbfthe cat\r\n\r\nsat down")  # BOM, CRLF, no final newline
    plain = write_lines(tmp_path / "plain.txt", ["the cat", "", "sat down"])
    embed.embed_file(crlf, tmp_path / "a.hdf5", tiny_layer, progress=False)
    embed.embed_file(plain, tmp_path / "b.hdf5", tiny_layer, progress=False)
    a, b = read_h5(tmp_path / "a.hdf5"), read_h5(tmp_path / "b.hdf5")
    assert_same_embeddings(a, b, exact=True)
    assert a["sentence_to_index"] == {"the cat": "0", "": "1", "sat down": "2"}


def test_empty_input(tiny_layer, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    embed.embed_file(empty, tmp_path / "e.hdf5", tiny_layer, progress=False)
    data = read_h5(tmp_path / "e.hdf5")
    assert data["sentence_to_index"] == {} and len(data) == 2


def test_jsonl_input(tiny_layer, tmp_path):
    tokens = [["The", "cat"], [], ["a b", "c"], ["naïve"]]
    path = tmp_path / "tokens.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in tokens), encoding="utf-8")
    out = tmp_path / "j.hdf5"
    embed.embed_file(path, out, tiny_layer, output_mode="top", progress=False)
    data = read_h5(out)
    want = tiny_layer.embed(tokens, "layers")
    for i, t in enumerate(tokens):
        assert data[str(i)].shape == (len(t), WIDTH)
        np.testing.assert_allclose(data[str(i)], want[i][-1], rtol=1e-5, atol=1e-6)
    # The token "a b" stays one token; the key is the tokens joined by spaces.
    assert data["sentence_to_index"] == {"The cat": "0", "": "1", "a b c": "2", "naïve": "3"}

    # input_format overrides the suffix.
    as_text = tmp_path / "tokens.txt"
    as_text.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    embed.embed_file(as_text, tmp_path / "j2.hdf5", tiny_layer, output_mode="top", input_format="jsonl", progress=False)
    assert_same_embeddings(data, read_h5(tmp_path / "j2.hdf5"), exact=True)


@pytest.mark.parametrize(
    "content,message",
    [
        (b'["ok"]\n{"tokens": ["x"]}\n', "line 2: expected a JSON list of token strings"),
        (b'["ok"]\n["a", 3]\n', "line 2: expected a JSON list"),
        (b'["ok"]\n[broken\n', "line 2: not valid JSON"),
        (b'["ok"]\n\n["x"]\n', "line 2: empty line in a JSON-lines file"),
    ],
)
def test_bad_jsonl(tiny_layer, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(embed.InputError, match=message.replace("[", r"\[")):
        embed.embed_file(path, tmp_path / "o.hdf5", tiny_layer, progress=False)
    assert not (tmp_path / "o.hdf5").exists() and not (tmp_path / "o.hdf5.partial").exists()


def test_undecodable_bytes(tiny_layer, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("good line\nanother\ncaf\xe9 au lait\n".encode("latin-1"))
    out = tmp_path / "o.hdf5"
    with pytest.raises(embed.InputError, match=r"line 3: invalid UTF-8 byte\(s\) b'\\xe9'.*--errors replace"):
        embed.embed_file(path, out, tiny_layer, progress=False)
    assert not out.exists() and not (tmp_path / "o.hdf5.partial").exists()

    embed.embed_file(path, out, tiny_layer, errors="replace", progress=False)
    data = read_h5(out)
    assert data["sentence_to_index"]["caf\ufffd au lait"] == "2"
    assert data["2"].shape == (3, 3, WIDTH)
    embed.embed_file(path, tmp_path / "i.hdf5", tiny_layer, errors="ignore", progress=False)
    assert "caf au lait" in read_h5(tmp_path / "i.hdf5")["sentence_to_index"]


def test_missing_input_and_existing_output(tiny_layer, corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="input file not found"):
        embed.embed_file(tmp_path / "nope.txt", tmp_path / "o.hdf5", tiny_layer)
    out = tmp_path / "o.hdf5"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        embed.embed_file(corpus, out, tiny_layer, progress=False)
    assert out.read_bytes() == b"precious"
    embed.embed_file(corpus, out, tiny_layer, overwrite=True, progress=False)
    assert len(read_h5(out)) == len(LINES) + 2
    with pytest.raises(ValueError, match="output_mode"):
        embed.embed_file(corpus, tmp_path / "x.hdf5", tiny_layer, output_mode="sum")
    with pytest.raises(ValueError, match="exactly one"):
        embed.embed_file(corpus, tmp_path / "x.hdf5")


class _Interrupt:
    """Wraps `batching.iter_embed` to raise KeyboardInterrupt on its n-th call."""

    def __init__(self, real, on_call):
        self.real, self.on_call, self.calls = real, on_call, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.on_call:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)


def test_interrupted_run_resumes_to_the_same_file(tiny_layer, corpus, tmp_path, monkeypatch):
    reference = tmp_path / "reference.hdf5"
    embed.embed_file(corpus, reference, tiny_layer, chunk_size=5, progress=False)

    out = tmp_path / "out.hdf5"
    partial = tmp_path / "out.hdf5.partial"
    monkeypatch.setattr(batching, "iter_embed", _Interrupt(batching.iter_embed, on_call=2))
    with pytest.raises(KeyboardInterrupt):
        embed.embed_file(corpus, out, tiny_layer, chunk_size=5, progress=False)
    monkeypatch.undo()
    assert not out.exists() and partial.exists()
    with h5py.File(partial, "r") as f:  # the first chunk of five finished
        assert f.attrs["keras_elmo_completed"] == 5
        assert "sentence_to_index" not in f
    with pytest.raises(FileExistsError, match="--resume"):
        embed.embed_file(corpus, out, tiny_layer, chunk_size=5, progress=False)

    # Resuming with other settings, another model or another input is refused.
    with pytest.raises(ValueError, match="output_mode"):
        embed.embed_file(corpus, out, tiny_layer, output_mode="top", resume=True, progress=False)
    other = write_lines(tmp_path / "other.txt", ["different"] + LINES[1:])
    with pytest.raises(ValueError, match="input"):
        embed.embed_file(other, out, tiny_layer, resume=True, progress=False)
    shorter = write_lines(tmp_path / "shorter.txt", LINES[:4])
    with pytest.raises(ValueError, match="input changed"):
        embed.embed_file(shorter, out, tiny_layer, resume=True, progress=False)

    # Simulate the unfinished second chunk's leftovers; resume drops and redoes them.
    with h5py.File(partial, "r+") as f:
        f.create_dataset("7", data=np.zeros((1, 1, 1), np.float32))
    calls = _Interrupt(batching.iter_embed, on_call=0)
    monkeypatch.setattr(batching, "iter_embed", calls)
    summary = embed.embed_file(corpus, out, tiny_layer, chunk_size=5, resume=True, progress=False)
    assert calls.calls == 1  # only the second chunk was embedded
    assert summary.sentences == len(LINES)
    assert not partial.exists()
    a, b = read_h5(reference), read_h5(out)
    assert_same_embeddings(a, b, exact=True)
    assert a["@attrs"] == b["@attrs"] and set(a["@attrs"]) == {"keras_elmo"}


def test_resume_without_partial_starts_fresh_and_refuses_finished_output(tiny_layer, corpus, tmp_path):
    out = tmp_path / "o.hdf5"
    embed.embed_file(corpus, out, tiny_layer, resume=True, progress=False)
    assert len(read_h5(out)) == len(LINES) + 2
    with pytest.raises(FileExistsError):
        embed.embed_file(corpus, out, tiny_layer, resume=True, progress=False)


def test_forget_sentences(tiny_layer, corpus, tmp_path):
    out = tmp_path / "o.hdf5"
    embed.embed_file(corpus, out, tiny_layer, forget_sentences=True, progress=False)
    with h5py.File(out, "r") as f:
        assert "sentence_to_index" not in f and len(f) == len(LINES)
    with embed.open_embeddings(out) as emb:
        assert emb.sentence_to_index == {}


def test_open_embeddings_file(tiny_layer, corpus, tmp_path):
    out = tmp_path / "o.hdf5"
    embed.embed_file(corpus, out, tiny_layer, output_mode="elmo", progress=False)
    raw = read_h5(out)
    with embed.open_embeddings(out) as emb:
        assert len(emb) == len(LINES) and list(emb) == list(range(len(LINES)))
        assert emb.output_mode == "elmo"
        np.testing.assert_array_equal(emb[3], raw["3"])
        np.testing.assert_array_equal(emb["3"], raw["3"])
        np.testing.assert_array_equal(emb[np.int64(3)], raw["3"])
        assert 3 in emb and "3" in emb and len(LINES) not in emb and "sentence_to_index" not in emb
        with pytest.raises(KeyError):
            emb[len(LINES)]
        with pytest.raises(KeyError):
            emb["sentence_to_index"]
        with pytest.raises(TypeError):
            emb[0] = np.zeros(1)  # read-only
        assert emb.sentence_to_index["The cat sat on the mat ."] == 4
        assert dict(emb.items()).keys() == set(range(len(LINES)))
    with pytest.raises(FileNotFoundError, match="no embeddings"):
        embed.open_embeddings(tmp_path / "missing.hdf5")


def _write_shards(layer, lines, folder, sizes, mode="all"):
    """A sharded folder written part by part (what the Ray workers do), without Ray."""
    folder.mkdir()
    sentences = [embed.parse_line(line.encode(), i, "text") for i, line in enumerate(lines)]
    parts, start = [], 0
    for k, size in enumerate(sizes):
        chunk = sentences[start : start + size]
        parts.append(embed.write_part(layer, chunk, folder / f"part-{k:05d}.hdf5", mode))
        start += size
    embed.write_manifest(folder, parts[::-1], embed.run_description(layer, mode))
    return parts


def test_shard_folder_reads_and_merges_like_one_file(tiny_layer, corpus, tmp_path):
    single = tmp_path / "single.hdf5"
    embed.embed_file(corpus, single, tiny_layer, progress=False)
    folder = tmp_path / "shards"
    parts = _write_shards(tiny_layer, LINES, folder, [4, 6])
    assert [p["first_index"] for p in parts] == [0, 4]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["file"] for p in manifest["parts"]] == ["part-00000.hdf5", "part-00001.hdf5"]
    assert manifest["num_sentences"] == len(LINES)

    with embed.open_embeddings(folder) as emb, embed.open_embeddings(single) as ref_emb:
        assert list(emb) == list(ref_emb) == list(range(len(LINES)))
        for i in emb:
            np.testing.assert_allclose(emb[i], ref_emb[i], rtol=1e-5, atol=1e-6)
        # Repeated sentence across shards: the last index wins, as in one file.
        assert emb.sentence_to_index == ref_emb.sentence_to_index

    merged = tmp_path / "merged.hdf5"
    embed.merge_embeddings(folder, merged, progress=False)
    assert_same_embeddings(read_h5(single), read_h5(merged))
    with pytest.raises(FileExistsError):
        embed.merge_embeddings(folder, merged, progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        embed.open_embeddings(tmp_path)


def test_keras_model_file(tiny_layer, corpus, tmp_path):
    import keras

    path = tmp_path / "elmo.keras"
    keras.saving.save_model(tiny_layer, path)
    embed.embed_file(corpus, tmp_path / "a.hdf5", model=path, progress=False)
    embed.embed_file(corpus, tmp_path / "b.hdf5", tiny_layer, progress=False)
    a, b = read_h5(tmp_path / "a.hdf5"), read_h5(tmp_path / "b.hdf5")
    assert_same_embeddings(a, b, exact=True)
    assert a["@attrs"] == b["@attrs"]  # same model fingerprint

    # A model that contains an ELMo layer works too.
    inputs = keras.Input(shape=(None, 50), dtype="int32")
    wrapper = keras.Model(inputs, ELMoLayer(TINY_OPTIONS, name="inner")(inputs))
    assert embed.find_elmo_layer(wrapper) is wrapper.get_layer("inner")
    assert embed.find_elmo_layer(keras.layers.Dense(2)) is None


def test_progress_line_without_tqdm(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    bar = embed.Progress(10, True)
    bar.update(4, 40)
    bar.close()
    err = capsys.readouterr().err
    assert "4/10 sentences" in err and "sent/s" in err and "tok/s" in err
    quiet = embed.Progress(10, False)
    quiet.update(4, 40)
    quiet.close()
    assert capsys.readouterr().err == ""
