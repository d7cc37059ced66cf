"""keras_elmo: ELMo (Peters et al. 2018) as Keras 3 layers on TensorFlow, JAX and PyTorch."""

from keras_elmo.chars import char_ids, sentences_char_ids, tokenize
from keras_elmo.layers import ELMoLayer, ELMoTokensLayer
from keras_elmo.options import ELMoOptions, OptionsError
from keras_elmo.scalar_mix import ScalarMix
from keras_elmo.weights import WeightFileError

__version__ = "0.1.0"

__all__ = [
    "ELMoLayer",
    "ELMoOptions",
    "ELMoTokensLayer",
    "OptionsError",
    "ScalarMix",
    "WeightFileError",
    "char_ids",
    "sentences_char_ids",
    "tokenize",
]
