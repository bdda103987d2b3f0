"""Data subjects and their encrypted profiles."""
