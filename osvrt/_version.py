"""The version: one place, read by setup.py and exported as osvrt.__version__."""
__version__ = "0.1.0"
