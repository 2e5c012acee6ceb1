"""srlib: small, readable single-image super-resolution in PyTorch."""

__version__ = "0.1.0"
