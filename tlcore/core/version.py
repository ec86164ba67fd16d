"""The package version, in one place: results, model files and the CLI read it from here."""

__version__ = "0.1.0"
