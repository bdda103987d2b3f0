"""The demo: a realistic catalog, a synthetic population, partners, accounts and rewards."""
