"""Ecosystem partners registered by the operator."""
