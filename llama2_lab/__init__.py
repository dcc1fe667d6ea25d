"""llama2_lab: Llama 2, built piece by piece, checked against the reference."""

__version__ = "0.1.0"
