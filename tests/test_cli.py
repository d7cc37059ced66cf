"""The `keras-elmo` command: `embed` and `merge`, argument handling and error messages."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT  # noqa: E402
from keras_elmo import cli, embed
from test_embed import LINES, assert_same_embeddings, make_tiny_model, read_h5, write_lines  # noqa: E402


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("cli_model"))


@pytest.fixture
def corpus(tmp_path):
    return write_lines(tmp_path / "corpus.txt", LINES)


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def model_args(model_files):
    return ["--options", model_files[0], "--weights", model_files[1]]


def test_embed_command_matches_python_api(model_files, corpus, tmp_path, capsys):
    out = tmp_path / "out.hdf5"
    code, err = run(["embed", corpus, out, *model_args(model_files), "--output-mode", "top", "--no-progress"], capsys)
    assert code == 0, err
    assert f"wrote {len(LINES)} sentences" in err
    expected = tmp_path / "expected.hdf5"
    embed.embed_file(corpus, expected, options=model_files[0], weights=model_files[1], output_mode="top", progress=False)
    assert_same_embeddings(read_h5(out), read_h5(expected), exact=True)
    assert read_h5(out)["1"].shape == (0, 16)


def test_progress_bar_shows_rates(model_files, corpus, tmp_path, capsys):
    code, err = run(["embed", corpus, tmp_path / "o.hdf5", *model_args(model_files), "--progress"], capsys)
    assert code == 0, err
    assert "sent/s" in err and "tok/s" in err and f"{len(LINES)}/{len(LINES)}" in err


def test_python_dash_m_reads_stdin(model_files, tmp_path):
    out = tmp_path / "stdin.hdf5"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "keras_elmo", "embed", "-", str(out), *map(str, model_args(model_files)),
         "--output-mode", "default"],
        input="the cat sat\n\nhello world\n".encode(), capture_output=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    data = read_h5(out)
    assert data["sentence_to_index"] == {"the cat sat": "0", "": "1", "hello world": "2"}
    assert data["0"].shape == (16,) and (data["1"] == 0).all()


def test_errors_are_clear(model_files, corpus, tmp_path, capsys):
    m = model_args(model_files)
    code, err = run(["embed", tmp_path / "missing.txt", tmp_path / "o.hdf5", *m], capsys)
    assert code == 1 and "input file not found" in err and "missing.txt" in err

    existing = tmp_path / "exists.hdf5"
    existing.write_bytes(b"x")
    code, err = run(["embed", corpus, existing, *m], capsys)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    code, err = run(["embed", corpus, existing, *m, "--overwrite", "--no-progress"], capsys)
    assert code == 0, err

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    code, err = run(["embed", bad, tmp_path / "b.hdf5", *m], capsys)
    assert code == 1 and "line 2" in err and "--errors replace" in err
    code, err = run(["embed", bad, tmp_path / "b.hdf5", *m, "--errors", "replace", "--no-progress"], capsys)
    assert code == 0, err

    code, err = run(["embed", corpus, tmp_path / "c.hdf5"], capsys)
    assert code == 1 and "exactly one of" in err
    code, err = run(["embed", corpus, tmp_path / "c.hdf5", "--options", model_files[0]], capsys)
    assert code == 1 and "--weights" in err
    code, err = run(["embed", corpus, tmp_path / "c.hdf5", "--model", tmp_path / "nope.keras"], capsys)
    assert code == 1 and "model file not found" in err
    assert not list(tmp_path.glob("c.hdf5*"))


def test_usage_errors(model_files, corpus, tmp_path, capsys):
    for argv in (
        ["embed", corpus, tmp_path / "o.hdf5", *model_args(model_files), "--num-workers", "2"],
        ["embed", corpus, tmp_path / "o.hdf5", "--output-mode", "sum"],
        ["embed", corpus, tmp_path / "o.hdf5", "--max-tokens-per-batch", "0"],
        ["embed", corpus],
        [],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main([str(a) for a in argv])
        assert exc.value.code == 2, argv
    assert "only apply with --ray" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["embed", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("sentence_to_index", "--output-mode", "--resume", "--ray", "(3, 0, 2P)", "--preset"):
        assert word in text, word


def test_ray_flag_without_ray_says_what_to_install(model_files, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    code, err = run(["embed", corpus, tmp_path / "o", *model_args(model_files), "--ray"], capsys)
    assert code == 1 and "pip install 'keras-elmo[ray]'" in err


def test_interrupt_then_resume(model_files, corpus, tmp_path, capsys, monkeypatch):
    from keras_elmo import batching

    out = tmp_path / "o.hdf5"
    real = batching.iter_embed
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batching, "iter_embed", interrupted)
    argv = ["embed", corpus, out, *model_args(model_files), "--chunk-size", "5", "--no-progress"]
    code, err = run(argv, capsys)
    assert code == 130 and "--resume" in err
    assert not out.exists() and (tmp_path / "o.hdf5.partial").exists()
    code, err = run(argv, capsys)
    assert code == 1 and "--resume" in err
    monkeypatch.undo()
    code, err = run([*argv, "--resume"], capsys)
    assert code == 0, err
    expected = tmp_path / "expected.hdf5"
    code, err = run(["embed", corpus, expected, *model_args(model_files), "--chunk-size", "5", "--no-progress"], capsys)
    assert_same_embeddings(read_h5(out), read_h5(expected), exact=True)


def test_merge_command(model_files, corpus, tmp_path, capsys):
    from test_embed import _write_shards

    from keras_elmo.layers import ELMoLayer

    layer = ELMoLayer.from_files(*model_files)
    folder = tmp_path / "shards"
    _write_shards(layer, LINES, folder, [5, 5])
    out = tmp_path / "merged.hdf5"
    code, err = run(["merge", folder, out, "--no-progress"], capsys)
    assert code == 0 and f"merged {len(LINES)} sentences" in err
    single = tmp_path / "single.hdf5"
    embed.embed_file(corpus, single, layer, progress=False)
    assert_same_embeddings(read_h5(out), read_h5(single))
    code, err = run(["merge", folder, out], capsys)
    assert code == 1 and "--overwrite" in err
    code, err = run(["merge", tmp_path / "nothing", tmp_path / "m2.hdf5"], capsys)
    assert code == 1 and "no embeddings" in err


def test_preset_directory(model_files, corpus, tmp_path, capsys):
    pytest.importorskip("keras_elmo.presets", reason="keras_elmo.presets (ELMoLayer.from_preset) is not there yet")
    preset = tmp_path / "my_elmo"
    preset.mkdir()
    (preset / "options.json").write_bytes(model_files[0].read_bytes())
    (preset / "weights.hdf5").write_bytes(model_files[1].read_bytes())
    out = tmp_path / "p.hdf5"
    code, err = run(["embed", corpus, out, "--preset", preset, "--output-mode", "elmo", "--no-progress"], capsys)
    assert code == 0, err
    expected = tmp_path / "e.hdf5"
    embed.embed_file(corpus, expected, options=model_files[0], weights=model_files[1], output_mode="elmo", progress=False)
    data, want = read_h5(out), read_h5(expected)
    assert_same_embeddings(data, want)
    assert np.asarray(data["0"]).shape == (7, 16)
    assert json.loads(data["@attrs"]["keras_elmo"])["output_mode"] == "elmo"
