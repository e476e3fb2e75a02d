"""Benchmarks of msiv2_async, each figure a ratio to a baseline measured in the same run.

Run from a source checkout: ``python -m benchmarks`` (full), ``python -m benchmarks --quick``, or on an
Azure VM ``python -m benchmarks --target imds``; also ``msiv2-async bench``. See the README's
"Benchmarks" section.
"""

from ._main import main

__all__ = ["main"]
