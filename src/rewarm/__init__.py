"""rewarm: reproducible continual pre-training grids (Gupta et al. 2023, "How to (re)warm your model?")."""

__version__ = "0.1.0"
