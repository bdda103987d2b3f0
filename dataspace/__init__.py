"""Dataspace: a privacy-preserving trusted data space server."""

__version__ = "0.1.0"
