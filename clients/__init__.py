"""Clients of the Dataspace server: the Python SDK, the remote CLI commands, and the web pages' static assets.

Everything here talks to the server over HTTP only; nothing imports the server package.
"""
