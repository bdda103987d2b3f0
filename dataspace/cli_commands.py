"""Imports every module that adds commands to the CLI (one line per module)."""
