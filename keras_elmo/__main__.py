"""`python -m keras_elmo ...`: the `keras-elmo` command."""

from keras_elmo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
