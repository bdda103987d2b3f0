"""Backup and restore of the database, with the restored logs checked against the checkpoints published before.

``backup(settings, db, keys, dest)`` sequences both logs (so their last checkpoint covers every committed
entry), records those signed checkpoints in ``manifest.json``, then copies the database: ``pg_dump``
(custom format) on PostgreSQL, SQLite's online backup API on SQLite (a consistent copy while the server
keeps writing). The manifest also holds the dump's SHA-256. Neither the key file nor the epoch key store is
in a backup, on purpose: they are backed up apart (an erasure destroys keys, and a backup must not bring
them back).

``restore(settings, db, keys, vault, src)`` restores into an EMPTY database (the configured one) and, before
anything may serve from it, checks what it got:

- the dump's SHA-256 matches the manifest;
- for each log (audit trail, data-point ledger): every entry's leaf hash is recomputed from its content and
  the tree rebuilt; the restored head, its latest signed checkpoint, the checkpoint in the manifest and the
  copy kept outside the database (``dataspace.tlog.witness``) must all be prefixes of that one tree (roots
  compared at each size, and the server's own consistency proof verified against each);
- a log SMALLER than the manifest's checkpoint is a corrupt or doctored backup: refused. A log smaller than
  the kept copy (entries published after the backup was taken) is refused unless the operator passes
  ``accept_log_rollback``: then the restore is recorded in the audit trail (sizes before and after), the
  kept copy is archived beside the new one, and verifiers holding a later checkpoint can see why it no
  longer extends.

A refused restore leaves the target empty (SQLite: the restored file is never moved into place; PostgreSQL:
the restored schema is dropped). After an accepted restore the epoch keys are reconciled, so subjects
erased after the backup stay unreadable (``dataspace.vault``), and so are the partner contributions (linkage
runs) shredded after it: their keys live outside the database too (``dataspace.linkage.keys``).
"""

from dataspace.backup.service import LogCheck, Manifest, RestoreReport, backup, restore

__all__ = ["LogCheck", "Manifest", "RestoreReport", "backup", "restore"]
