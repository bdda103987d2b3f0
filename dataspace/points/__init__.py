"""The value-points exchange: a double-entry ledger of points earned for data authorization and use."""
