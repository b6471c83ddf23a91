"""Runnable tapegrad examples (``python examples/NAME.py`` or ``python -m examples.NAME``).

- ``linear_regression``: the hand-written gradient-descent loop, with and without zeroing
  the gradients (the loss oscillates when they accumulate).
- ``digits_mlp``: an MLP on scikit-learn's bundled digits, trained with Adam.
- ``rosenbrock``: SciPy's trust-ncg with tapegrad gradients, n = 100 and 10 000.
- ``freeze_finetune``: a frozen first layer stays bit-for-bit unchanged while the rest trains.
- ``digits_cnn``: Conv2d, BatchNorm and pooling on the digits, with a DataLoader and a
  OneCycle schedule.
- ``char_rnn``: a GRU character language model on ``examples/data/tiny.txt``, sampling
  text as it learns.
- ``ddp_digits``: the digits MLP trained data-parallel under ``mpiexec -n N``.

Each writes a PNG into ``--out`` (default ``examples/out/``) and has a ``main(argv=None)``
that returns its key numbers as a dict.
"""
