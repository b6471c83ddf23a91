"""asv benchmark suite of tapegrad (see asv.conf.json).

Run ``asv machine --yes`` once, then ``asv run --python=same --quick --show-stderr``.
``python benchmarks/eager_compare.py`` prints the tapegrad / PyTorch / NumPy table.
"""
