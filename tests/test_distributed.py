"""`keras-elmo embed --ray`: Ray Data on a local Ray cluster started by the test.

Needs `pip install 'keras-elmo[ray]'` (skipped without it). The Ray workers inherit
KERAS_BACKEND from the test process, so this runs on every backend (under a minute).
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from keras_elmo import embed
from keras_elmo.distributed import embed_file_ray, plan_parts
from test_embed import LINES, assert_same_embeddings, make_tiny_model, read_h5, write_lines  # noqa: E402

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'keras-elmo[ray]'")

# 23 lines: empty lines, a repeated sentence, non-ASCII text; 4 shards of 6 (the last of 5).
CORPUS = LINES + ["one more line", "", "The cat sat on the mat .", "x y z"] + LINES[:9]


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_job")
    options, weights = make_tiny_model(folder / "model")
    layer = embed.load_layer(options=options, weights=weights)
    model = folder / "elmo.keras"
    keras.saving.save_model(layer, model)
    corpus = write_lines(folder / "corpus.txt", CORPUS)
    single = folder / "single.hdf5"
    embed.embed_file(corpus, single, layer, progress=False)
    return folder, model, corpus, single


def test_plan_parts(tmp_path):
    path = write_lines(tmp_path / "c.txt", ["a b", "", "c"], ending="\r\n")
    parts, digest = plan_parts(path, "text", "strict", 2)
    assert [(p["first_index"], p["count"], p["num_tokens"]) for p in parts] == [(0, 2, 2), (2, 1, 1)]
    assert parts[0]["start"] == 0 and parts[0]["end"] == parts[1]["start"] == 7 and parts[1]["end"] == 10
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nok\n\xff\n")
    with pytest.raises(embed.InputError, match="line 3"):
        plan_parts(bad, "text", "strict", 2)


def test_ray_matches_single_process_and_resumes(local_ray, setup, tmp_path, capsys):
    folder, model, corpus, single = setup
    out = tmp_path / "shards"
    summary = embed_file_ray(corpus, out, model=model, num_workers=2, threads=1, shard_size=6, progress=False)
    assert summary.sentences == len(CORPUS) and summary.output == out

    manifest = json.loads((out / "manifest.json").read_text())
    files = [f"part-{k:05d}.hdf5" for k in range(4)]
    assert [p["file"] for p in manifest["parts"]] == files
    assert [(p["first_index"], p["count"]) for p in manifest["parts"]] == [(0, 6), (6, 6), (12, 6), (18, 5)]
    assert manifest["num_sentences"] == len(CORPUS) and manifest["output_mode"] == "all"
    assert manifest["keras_backend"] == keras.backend.backend()  # the workers used the driver's
    assert sorted(p.name for p in out.iterdir()) == sorted(files + ["manifest.json", "job.json"])
    # Each shard keeps the global line indices as keys.
    assert sorted(k for k in read_h5(out / files[1]) if k.isdigit()) == sorted(str(i) for i in range(6, 12))

    # Every sentence's vectors equal the single-process command's; keys and order kept.
    with embed.open_embeddings(out) as got, embed.open_embeddings(single) as want:
        assert list(got) == list(want) == list(range(len(CORPUS)))
        for i in want:
            assert got[i].shape == want[i].shape
            np.testing.assert_allclose(got[i], want[i], rtol=1e-5, atol=1e-6, err_msg=str(i))
        assert got.sentence_to_index == want.sentence_to_index
        assert got.sentence_to_index["The cat sat on the mat ."] == 18  # the last of 4

    merged = tmp_path / "merged.hdf5"
    embed.merge_embeddings(out, merged, progress=False)
    assert_same_embeddings(read_h5(merged), read_h5(single))

    # Refuses to overwrite; the command with --ray --resume computes only the missing
    # parts of an interrupted job.
    from keras_elmo import cli

    with pytest.raises(FileExistsError, match="--overwrite"):
        embed_file_ray(corpus, out, model=model, shard_size=6, progress=False)
    partial = tmp_path / "again.partial"
    shutil.copytree(out, partial)
    (partial / "manifest.json").unlink()
    (partial / files[2]).unlink()
    kept = {name: os.stat(partial / name).st_mtime_ns for name in (files[0], files[1], files[3])}
    again = tmp_path / "again"
    argv = ["embed", str(corpus), str(again), "--ray", "--model", str(model), "--shard-size", "6", "--no-progress"]
    assert cli.main(argv) == 1
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(ValueError, match="shard_size"):
        embed_file_ray(corpus, again, model=model, shard_size=5, resume=True, progress=False)
    assert cli.main([*argv, "--resume", "--num-workers", "1", "--threads", "1"]) == 0, capsys.readouterr().err
    assert {name: os.stat(again / name).st_mtime_ns for name in kept} == kept
    assert_same_embeddings(read_h5(again / files[2]), read_h5(out / files[2]))
    assert json.loads((again / "manifest.json").read_text()) == manifest
    assert not partial.exists()


def test_cli_ray_errors(setup, tmp_path, capsys):
    from keras_elmo import cli

    folder, model, corpus, single = setup
    assert cli.main(["embed", "-", str(tmp_path / "x"), "--ray", "--model", str(model)]) == 1
    assert "stdin" in capsys.readouterr().err
    assert cli.main(["embed", str(corpus), str(tmp_path / "x"), "--ray", "--model", str(tmp_path / "no.keras")]) == 1
    assert "model file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.partial").exists()
