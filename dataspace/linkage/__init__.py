"""Consent-gated record linkage with a partner's own data: private set intersection, sealed partner columns.

``protocol``: the operator's side of the PSI (pure; the shared spec is ``clients.sdk._psi``); ``service``:
runs, links, shredding, the read-time join; ``grants``: what a linkage grant is (kept import-light so the
consent service can ask).
"""
