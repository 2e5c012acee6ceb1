"""srlib: small, readable single-image super-resolution in PyTorch."""

from srlib.perf import configure_openmp

__version__ = "0.1.0"

configure_openmp()  # before torch loads: idle OpenMP threads sleep (srlib.perf)
