"""Presets: the registry, downloads into the cache (from a local HTTP server), preset
directories and `save_preset`."""

import hashlib
import http.server
import os
import shutil
import socket
import threading

import keras
import numpy as np
import pytest

from conftest import require_fixtures
import keras_elmo
from keras_elmo import ELMoLayer, ELMoTokensLayer, presets
from keras_elmo.presets import DownloadError, PresetError
from keras_elmo.weights import collect_bilm_weights

SENTENCES = ["the cat sat on the mat .", "a dog", "ELMo 's vectors"]
ALLENNLP = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own cache, online mode and an unchanged registry afterwards."""
    monkeypatch.setenv(presets.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(presets.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(presets, "_REGISTRY", dict(presets._REGISTRY))


@pytest.fixture
def model_files():
    folder = require_fixtures() / "bilm-tf"
    return folder / "options.json", folder / "lm_weights.hdf5"


def _same_weights(a, b):
    wa, wb = collect_bilm_weights(a.char_encoder, a.bilstm), collect_bilm_weights(b.char_encoder, b.bilstm)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


def _outputs(layer, inputs=SENTENCES):
    out = layer(inputs)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return keras.ops.convert_to_numpy(out)


def _cache_files(root):
    found = []
    for folder, _, names in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, n), root) for n in names]
    return sorted(found)


# ---------------------------------------------------------------------- a local server


class _Server:
    """Serves `routes[path] = (body, mode)` on 127.0.0.1 and counts requests.

    mode "ok" sends the body; "truncate" announces the full length but sends half of
    it and closes the connection; "missing" answers 404.
    """

    def __init__(self):
        self.routes = {}
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                body, mode = server.routes.get(self.path, (b"", "missing"))
                if mode == "missing":
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[: len(body) // 2])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path, body, mode="ok"):
        self.routes[path] = (body, mode)
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def served(server, model_files):
    """The bilm-tf fixture model registered as preset 'served' from the local server."""
    options_file, weight_file = model_files
    body = weight_file.read_bytes()
    info = keras_elmo.register_preset(
        "served",
        server.add("/m/options.json", options_file.read_bytes()),
        server.add("/m/weights.hdf5", body),
        sha256=hashlib.sha256(body).hexdigest(),
        description="test model",
    )
    return info


# ---------------------------------------------------------------------- registry


def test_builtin_registry():
    listed = {p["name"]: p for p in keras_elmo.list_presets()}
    assert list(listed)[:4] == ["small", "medium", "original", "original-5.5B"]
    expected = {
        "small": ("2x1024_128_2048cnn_1xhighway", 13_600_000),
        "medium": ("2x2048_256_2048cnn_1xhighway", 28_000_000),
        "original": ("2x4096_512_2048cnn_2xhighway", 93_600_000),
        "original-5.5B": ("2x4096_512_2048cnn_2xhighway_5.5B", 93_600_000),
    }
    for name, (folder, parameters) in expected.items():
        entry = listed[name]
        stem = f"{ALLENNLP}{folder}/elmo_{folder}"
        assert entry["options_url"] == f"{stem}_options.json"
        assert entry["weights_url"] == f"{stem}_weights.hdf5"
        assert entry["parameters"] == parameters
        assert entry["size"] > 10_000_000 and entry["description"]
        assert entry["sha256"] is None and entry["cached"] is False


def test_register_preset_validation(tmp_path):
    with pytest.raises(ValueError, match="SHA-256"):
        keras_elmo.register_preset("x", "https://a/o.json", "https://a/w.hdf5", sha256="abc")
    with pytest.raises(ValueError, match="ftp://"):
        keras_elmo.register_preset("x", "ftp://a/o.json", "https://a/w.hdf5")
    with pytest.raises(ValueError, match="name"):
        keras_elmo.register_preset("", "https://a/o.json", "https://a/w.hdf5")
    info = keras_elmo.register_preset("mine", "o.json", tmp_path / "w.hdf5", description="d")
    assert os.path.isabs(info.options_url) and info.weights_url == str(tmp_path / "w.hdf5")
    assert [p for p in keras_elmo.list_presets() if p["name"] == "mine"][0]["description"] == "d"


def test_unknown_preset_lists_the_registered_ones():
    with pytest.raises(PresetError, match="'nope'.*small.*original"):
        ELMoLayer.from_preset("nope")
    with pytest.raises(FileNotFoundError, match="not found"):
        ELMoLayer.from_preset(os.path.join("no", "such", "dir"))


def test_cache_location(tmp_path, monkeypatch):
    assert presets.cache_dir() == str(tmp_path / "cache")
    monkeypatch.delenv(presets.CACHE_ENV)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "khome"))
    assert presets.cache_dir() == str(tmp_path / "khome" / "keras_elmo")


def test_cache_keys_do_not_collide():
    a = keras_elmo.register_preset("a/b", "https://x/o.json", "https://x/w.hdf5")
    b = keras_elmo.register_preset("a_b", "https://x/o.json", "https://y/w.hdf5")
    a2 = keras_elmo.register_preset("a/b", "https://x/o.json", "https://z/w.hdf5")
    dirs = {presets.preset_cache_dir(p) for p in (a, b, a2)}
    assert len(dirs) == 3
    assert all(os.path.dirname(d) == presets.cache_dir() for d in dirs)


# ---------------------------------------------------------------------- downloads


def test_download_then_cache(server, served, model_files, tmp_path, monkeypatch, capfd):
    layer = ELMoLayer.from_preset("served", output_mode="dict")
    assert sorted(server.requests) == ["/m/options.json", "/m/weights.hdf5"]
    assert "Downloading" in capfd.readouterr().err
    folder = presets.preset_cache_dir(served)
    assert os.path.basename(folder).startswith("served-")
    assert _cache_files(tmp_path / "cache") == sorted(
        os.path.join(os.path.basename(folder), n) for n in ("options.json", "weights.hdf5")
    )
    reference = ELMoLayer.from_files(*model_files, output_mode="dict")
    _same_weights(layer, reference)
    assert [p["cached"] for p in keras_elmo.list_presets() if p["name"] == "served"] == [True]

    # The second load reads the cache: no request, also offline.
    monkeypatch.setenv(presets.OFFLINE_ENV, "1")
    again = ELMoTokensLayer.from_preset("served")
    assert len(server.requests) == 2
    _same_weights(again, reference)
    # The cache folder is itself a loadable preset directory.
    _same_weights(ELMoLayer.from_preset(folder), reference)


def test_downloaded_model_outputs(server, served, model_files):
    a = _outputs(ELMoLayer.from_preset("served", output_mode="dict"))
    b = _outputs(ELMoLayer.from_files(*model_files, output_mode="dict"))
    for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_truncated_download(server, model_files, tmp_path):
    options_file, weight_file = model_files
    url = server.add("/t/weights.hdf5", weight_file.read_bytes(), mode="truncate")
    keras_elmo.register_preset("trunc", server.add("/t/options.json", options_file.read_bytes()), url)
    with pytest.raises(DownloadError, match=r"/t/weights.hdf5 is incomplete: got \d+ of \d+ bytes"):
        ELMoLayer.from_preset("trunc")
    assert _cache_files(tmp_path / "cache") == []  # not even the good options file
    # A later run downloads afresh (nothing half-written is mistaken for complete).
    server.add("/t/weights.hdf5", weight_file.read_bytes())
    ELMoLayer.from_preset("trunc")
    assert len(_cache_files(tmp_path / "cache")) == 2


def test_checksum_mismatch(server, model_files, tmp_path):
    options_file, weight_file = model_files
    body = bytearray(weight_file.read_bytes())
    body[-100] ^= 0xFF
    keras_elmo.register_preset(
        "bad",
        server.add("/b/options.json", options_file.read_bytes()),
        server.add("/b/weights.hdf5", bytes(body)),
        sha256=hashlib.sha256(weight_file.read_bytes()).hexdigest(),
    )
    with pytest.raises(DownloadError, match="/b/weights.hdf5 is corrupted: its SHA-256"):
        ELMoLayer.from_preset("bad")
    assert _cache_files(tmp_path / "cache") == []


def test_corrupted_file_without_checksum(server, model_files, tmp_path):
    options_file, weight_file = model_files
    keras_elmo.register_preset(
        "junk",
        server.add("/j/options.json", options_file.read_bytes()),
        server.add("/j/weights.hdf5", b"<html>Access denied</html>" * 100),
    )
    with pytest.raises(DownloadError, match="not usable: .*/j/weights.hdf5: not a readable HDF5"):
        ELMoLayer.from_preset("junk")
    keras_elmo.register_preset(
        "junk-options",
        server.add("/k/options.json", b'{"lstm": {"dim": 4'),
        server.add("/k/weights.hdf5", weight_file.read_bytes()),
    )
    with pytest.raises(DownloadError, match="not usable: .*/k/options.json: not a valid options.json"):
        ELMoLayer.from_preset("junk-options")
    assert _cache_files(tmp_path / "cache") == []


def test_http_error(server, model_files, tmp_path):
    keras_elmo.register_preset(
        "gone", server.add("/g/options.json", model_files[0].read_bytes()), server.base + "/g/missing.hdf5"
    )
    with pytest.raises(DownloadError, match=r"/g/missing.hdf5: HTTP 404.*KERAS_ELMO_OFFLINE"):
        ELMoLayer.from_preset("gone")
    assert _cache_files(tmp_path / "cache") == []


def test_server_down(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/m/options.json"
    keras_elmo.register_preset("down", url, f"http://127.0.0.1:{port}/m/weights.hdf5")
    with pytest.raises(DownloadError) as info:
        ELMoLayer.from_preset("down")
    message = str(info.value)
    assert url in message and "KERAS_ELMO_OFFLINE" in message and str(tmp_path / "cache") in message
    assert _cache_files(tmp_path / "cache") == []


def test_offline_without_cache(server, served, monkeypatch):
    monkeypatch.setenv(presets.OFFLINE_ENV, "1")
    with pytest.raises(FileNotFoundError, match="'served' is not in the cache.*KERAS_ELMO_OFFLINE=1"):
        ELMoLayer.from_preset("served")
    assert server.requests == []


def test_two_presets_from_one_server(server, tmp_path):
    fixtures = require_fixtures()
    for name in ("bilm-tf", "allennlp-elmo"):
        keras_elmo.register_preset(
            name,
            server.add(f"/{name}/options.json", (fixtures / name / "options.json").read_bytes()),
            server.add(f"/{name}/weights.hdf5", (fixtures / name / "lm_weights.hdf5").read_bytes()),
        )
    for name in ("bilm-tf", "allennlp-elmo"):
        layer = ELMoLayer.from_preset(name)
        _same_weights(
            layer, ELMoLayer.from_files(fixtures / name / "options.json", fixtures / name / "lm_weights.hdf5")
        )
        assert layer.options.use_skip_connections == (name == "allennlp-elmo")
    assert len(_cache_files(tmp_path / "cache")) == 4


def test_local_and_file_url_presets(model_files, tmp_path):
    options_file, weight_file = model_files
    body = weight_file.read_bytes()
    keras_elmo.register_preset("local", options_file, weight_file, sha256=hashlib.sha256(body).hexdigest())
    keras_elmo.register_preset("furl", options_file.as_uri(), weight_file.as_uri())
    reference = ELMoLayer.from_files(*model_files)
    _same_weights(ELMoLayer.from_preset("local"), reference)
    _same_weights(ELMoLayer.from_preset("furl"), reference)
    assert _cache_files(tmp_path / "cache") == []  # local files are read in place
    keras_elmo.register_preset("local-bad", options_file, weight_file, sha256="0" * 64)
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        ELMoLayer.from_preset("local-bad")
    keras_elmo.register_preset("local-missing", options_file, tmp_path / "none.hdf5")
    with pytest.raises(FileNotFoundError, match="none.hdf5"):
        ELMoLayer.from_preset("local-missing")


# ---------------------------------------------------------------------- preset directories


def _preset_dir(tmp_path, model_files, weights_names=("lm_weights.hdf5",), options=True):
    folder = tmp_path / "preset"
    folder.mkdir()
    if options:
        shutil.copy(model_files[0], folder / "options.json")
    for name in weights_names:
        shutil.copy(model_files[1], folder / name)
    return folder


@pytest.mark.parametrize("weights_name", ["weights.hdf5", "lm_weights.hdf5", "model.hdf5"])
def test_directory(tmp_path, model_files, weights_name):
    folder = _preset_dir(tmp_path, model_files, (weights_name,))
    (folder / "README.txt").write_text("not weights")
    layer = ELMoLayer.from_preset(folder, output_mode="default")
    assert layer.output_mode == "default"
    _same_weights(layer, ELMoLayer.from_files(*model_files))


def test_fixture_directory_picks_lm_weights(model_files):
    """The fixture folder also holds lm_embeddings_*.hdf5: lm_weights.hdf5 wins."""
    layer = ELMoLayer.from_preset(str(model_files[0].parent))
    _same_weights(layer, ELMoLayer.from_files(*model_files))


def test_directory_errors(tmp_path, model_files):
    folder = _preset_dir(tmp_path, model_files, ("a.hdf5", "b.hdf5"))
    with pytest.raises(PresetError, match=r"several candidate weight files \['a.hdf5', 'b.hdf5'\]"):
        ELMoLayer.from_preset(folder)
    (folder / "weights.hdf5").write_bytes(b"")
    (folder / "lm_weights.hdf5").write_bytes(b"")
    with pytest.raises(PresetError, match=r"several weight files \['weights.hdf5', 'lm_weights.hdf5'\]"):
        ELMoLayer.from_preset(folder)
    shutil.rmtree(folder)
    folder = _preset_dir(tmp_path, model_files, ())
    with pytest.raises(FileNotFoundError, match="no weight file"):
        ELMoLayer.from_preset(folder)
    shutil.rmtree(folder)
    folder = _preset_dir(tmp_path, model_files, options=False)
    with pytest.raises(FileNotFoundError, match=r"preset.*no options.json"):
        ELMoLayer.from_preset(folder)
    with pytest.raises(PresetError, match="not a file"):
        ELMoLayer.from_preset(folder / "lm_weights.hdf5")


def test_save_preset_round_trip(tmp_path, model_files):
    layer = ELMoLayer.from_files(*model_files, output_mode="dict", fine_tune_bilm=True)
    layer.scalar_mix.scalar_weights.assign(np.array([0.3, -1.25, 0.7], "float32"))
    layer.scalar_mix.gamma.assign(np.array(0.123456789, "float32"))
    layer.save_preset(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == [
        "keras_elmo_preset.json", "options.json", "weights.hdf5",
    ]
    loaded = ELMoLayer.from_preset(tmp_path / "saved")
    assert loaded.output_mode == "dict" and loaded.fine_tune_bilm and not loaded.stateful
    _same_weights(loaded, layer)
    for attribute in ("scalar_weights", "gamma"):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(getattr(loaded.scalar_mix, attribute)),
            keras.ops.convert_to_numpy(getattr(layer.scalar_mix, attribute)),
        )
    a, b = _outputs(layer), _outputs(loaded)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    # Keyword arguments override the stored settings; the other layer class loads it too.
    tokens = ELMoTokensLayer.from_preset(tmp_path / "saved", output_mode="elmo", fine_tune_bilm=False)
    assert tokens.output_mode == "elmo" and not tokens.fine_tune_bilm
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(tokens.scalar_mix.gamma), np.float32(0.123456789)
    )
    # Saving again over the same directory replaces the files.
    loaded.save_preset(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == [
        "keras_elmo_preset.json", "options.json", "weights.hdf5",
    ]


def test_bad_preset_config(tmp_path, model_files):
    layer = ELMoLayer.from_files(*model_files)
    layer.save_preset(tmp_path / "saved")
    config_file = tmp_path / "saved" / "keras_elmo_preset.json"
    good = config_file.read_text()
    config_file.write_text(good.replace('"output_mode"', '"outputmode"'))
    with pytest.raises(PresetError, match=r"keras_elmo_preset.json: unknown setting.*'outputmode'"):
        ELMoLayer.from_preset(tmp_path / "saved")
    config_file.write_text(good.replace('"scalar_weights": [', '"scalar_weights": [1.0, '))
    with pytest.raises(PresetError, match="scalar_weights' must be 3 numbers"):
        ELMoLayer.from_preset(tmp_path / "saved")
    config_file.write_text(good.replace('"weights.hdf5"', '"other.hdf5"'))
    with pytest.raises(FileNotFoundError, match="'other.hdf5', which is missing"):
        ELMoLayer.from_preset(tmp_path / "saved")
    config_file.write_text("{")
    with pytest.raises(PresetError, match="keras_elmo_preset.json: not valid JSON"):
        ELMoLayer.from_preset(tmp_path / "saved")
