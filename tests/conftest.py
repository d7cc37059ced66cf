"""Shared test set-up: where the reference fixtures are, and the active backend.

The reference models live outside the repository (`../shared/fixtures`, or the
folder named by $KERAS_ELMO_FIXTURES). On a user's machine without them the
fixture tests skip with a message saying so; under CI (CI=true) a missing folder
is a failure, never a skip.
"""

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
FIXTURES = Path(os.environ.get("KERAS_ELMO_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
FIXTURE_MODELS = ("bilm-tf", "allennlp-elmo")

#: A tiny model (skip connections, projection, clipping) that the layer and fast-path
#: tests build with random weights: small enough to compile and run in milliseconds.
TINY_OPTIONS = {
    "lstm": {"dim": 24, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
             "use_skip_connections": True},
    "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 8], [3, 8]], "n_highway": 1,
                 "n_characters": 262, "max_characters_per_token": 50, "activation": "relu"},
}

# The independent numpy reference is imported from tests/ only, never from the package.
sys.path.insert(0, str(TESTS_DIR))


def require_fixtures() -> Path:
    """The fixtures folder; skips (fails under CI) when it is missing."""
    if (FIXTURES / "bilm-tf" / "lm_weights.hdf5").is_file():
        return FIXTURES
    message = (
        f"ELMo reference fixtures not found at {FIXTURES}: set KERAS_ELMO_FIXTURES to the "
        "folder holding bilm-tf/ and allennlp-elmo/"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI must run the fixture tests)")
    pytest.skip(message)


@pytest.fixture
def fixtures_dir() -> Path:
    return require_fixtures()


def pytest_report_header(config):
    import keras

    return f"keras {keras.__version__}, backend {keras.backend.backend()}, fixtures {FIXTURES}"
