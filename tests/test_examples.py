"""The scripts in examples/ run end to end, each in a subprocess under the active backend.

Offline they use a small randomly initialised ELMo (and must say so); one run uses
the bilm-tf fixture model through --options/--weights.
"""

import os
import subprocess
import sys

import keras
import pytest

from conftest import REPO_ROOT, require_fixtures

EXAMPLES = REPO_ROOT / "examples"
OFFLINE_NOTICE = "NOTE: no --options/--weights/--preset given: using a small randomly initialised ELMo"


def run_example(script, *args, cwd):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = keras.backend.backend()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{script} {' '.join(args)} exited with {result.returncode} under {env['KERAS_BACKEND']}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    assert f"backend {env['KERAS_BACKEND']}" in result.stdout
    return result.stdout


def test_sentence_classifier_offline(tmp_path):
    out = run_example("sentence_classifier.py", "--quick", cwd=tmp_path)
    assert OFFLINE_NOTICE in out
    assert "validation accuracy" in out
    assert "Learned ScalarMix: token embedding" in out
    # Only the mix (3 layer weights + gamma) and the head train; the biLM is frozen.
    assert "'elmo/scalar_mix/scalar_weights': (3,), 'elmo/scalar_mix/gamma': ()" in out
    assert "char_encoder" not in out.split("Trainable weights", 1)[1].splitlines()[0]


def test_save_and_load_offline(tmp_path):
    out = run_example("save_and_load.py", "--quick", cwd=tmp_path)
    assert OFFLINE_NOTICE in out
    assert "OK: the loaded model predicts exactly what the saved model did." in out
    assert "DIFFERENT" not in out


@pytest.mark.fixtures
def test_save_and_load_fixture_model(tmp_path):
    model = require_fixtures() / "bilm-tf"
    out = run_example(
        "save_and_load.py",
        "--options", str(model / "options.json"),
        "--weights", str(model / "lm_weights.hdf5"),
        cwd=tmp_path,
    )
    assert OFFLINE_NOTICE not in out
    assert "Loading ELMo from" in out
    assert "OK: the loaded model predicts exactly what the saved model did." in out
