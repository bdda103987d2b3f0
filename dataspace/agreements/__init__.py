"""Data contracts as data: the tables (``models``: contracts, approvals, uploaded models, privacy budgets),
proposing and approving a contract and reading its terms (``contracts``), paying from a privacy budget
(``budget``). Jobs, linkage, real-time decisions, business events and consent offers read this package;
revoking a contract, which also shreds its linked contributions, is ``dataspace.jobs.revocation``."""
