"""resexp: reproduce the degradation experiment of He et al. 2016 (plain vs residual nets)."""

__version__ = "0.1.0"
