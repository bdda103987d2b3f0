"""Factories for tests, one module per domain; they build real rows through the real services (no mocks).

- ``catalog``: the demo catalog, a customer's ingest row;
- ``identities``: subjects, partners, users, OAuth clients and real signed access tokens;
- ``points``: subjects with points, rewards;
- ``jobs``: a demo population with real consents, partner principals, contracts and ONNX models.
"""
