"""Envelope encryption of customer data, built so that an erasure also holds against old database backups.

Layout::

    profile  --AES-256-GCM, AD "profile/v1/<subject>"-->  sealed under the subject's data key (DEK, random)
    DEK      --AES-256-GCM, AD "dek/v2/<subject>"------>  wrapped under the EPOCH KEY (bucket, generation)
    bucket   = subject_id % buckets         (buckets fixed when the key store is created; default 4096)

The database holds only the sealed profile and the wrapped DEK with its ``(bucket, epoch)``
(``subject_keys``), plus each bucket's current generation (``key_epochs``). The epoch keys live in the
KEY STORE, never in the database: a directory of key files (the embedded default, ``FileEpochKeys``) or a
PKCS#11 module, where they never leave the module. The same key-store directory keeps the RE-WRAP
JOURNAL (below).

Erasure (``dataspace.subjects.epochs``), and what it promises:

1. At once, in the erasure's own transaction: the subject's wrapped DEK and sealed profile are deleted
   and its bucket is marked for retirement (``key_epochs.retire_requested_at``). The live database can no
   longer open the subject.
2. Within the retirement interval (``DATASPACE_EPOCH_RETIRE_SECONDS``, default 60 s, run by every server's
   background task; on demand ``dataspace keys retire-epochs``): the bucket is RETIRED. A new epoch key
   ``(bucket, g+1)`` is created in the key store; every remaining DEK of the bucket is unwrapped and
   re-wrapped under it in one transaction (the bucket's ``key_epochs`` row is locked, so ingest and other
   retirements of that bucket wait); the journal entry for the bucket is replaced by those new wrappings;
   the transaction commits; then every older key of the bucket is destroyed in the key store.
3. From then on, no backup taken before the erasure can open the erased subject: its wrapped DEK in the
   backup is under a destroyed key, and the journal (the only other copy of the bucket's wrappings) no
   longer holds it (an earlier journal's wrapping of it was under a key now destroyed as well). Nothing in
   the backups is touched. Processes that cached the old key drop it within
   ``CACHE_SECONDS`` (30 s), so the bound is: retirement interval + 30 s (+ the duration of one pass).
4. The other subjects of the bucket survive a restore: ``reconcile`` (run after restoring a backup;
   ``dataspace keys reconcile``) replaces every wrapping under a destroyed key by the journal's wrapping
   under the current key when the journal has that subject, and shreds the rows it cannot recover (the
   subjects erased since the backup), marking them erased. Subjects of untouched buckets need nothing.
   It refuses a key store that has no key at all for a bucket the database uses (the wrong or a lost
   store) rather than shred everyone.

Per-erasure cost is bounded by the bucket size (subjects / buckets: about 2,500 DEKs re-wrapped at 10M
subjects), and a pass retires each marked bucket once however many of its subjects were erased.

What the operator must do: keep the key store (the epoch directory, or the HSM) OUT of database backups
and keep no point-in-time copies of it older than the time bound (an old copy of an epoch key is exactly
what erasure destroys); replicate it instead (HSM cluster, or a synchronously mirrored volume for the
file backend). Losing the key store loses every profile. One key store serves one database: a copy of the
database restored beside the live one (a drill) must not run erasures or retirements on the shared store.

Failures: a crash before the retirement's commit leaves the old keys and wrappings in force (the bucket is
still marked, the next pass redoes it; an unused new key is reused). A crash between commit and destroy
leaves old keys that no live row uses: the next pass destroys every key of a bucket older than the one in
``key_epochs``. A wrap under a key the store does not have fails (ingest refuses rather than storing data
it could not open).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dataspace.errors import ConfigurationError, Fault
from dataspace.keystore import EpochCipher, KeyStoreSpec

NONCE = 12
DEFAULT_BUCKETS = 4096
# How long a process trusts an epoch key it read without asking the store again (bounds how long a
# destroyed key keeps working in another process's memory).
CACHE_SECONDS = 30.0


class DecryptionError(Fault):
    """A value could not be opened (wrong key, tampered, shredded or retired). Carries no detail on purpose."""


class EpochKeys(Protocol):
    """Where epoch keys live. A key is named by ``(bucket, generation)``; its bytes may never leave."""

    def generations(self, bucket: int) -> list[int]:
        """The generations the store holds for this bucket, ascending."""
        ...

    def inventory(self) -> dict[int, list[int]]:
        """Every key the store holds: ``{bucket: [generations ascending]}``."""
        ...

    def create(self, bucket: int, generation: int) -> None:
        """Create the key if it does not exist (idempotent; concurrent creators end with one key)."""
        ...

    def destroy(self, bucket: int, generation: int) -> None:
        """Destroy the key for good (no-op if absent)."""
        ...

    def cipher(self, bucket: int, generation: int) -> EpochCipher | None:
        """The key's cipher, or None if the store does not hold it."""
        ...

    def spec(self) -> KeyStoreSpec:
        """What another process needs to open this store (no key bytes)."""
        ...


def open_store(spec: KeyStoreSpec, *, buckets: int = DEFAULT_BUCKETS) -> Vault:
    """A vault on the key store ``spec`` names; ``buckets`` applies only to a store used for the first time."""
    if spec.backend == "file":
        return Vault(FileEpochKeys(Path(spec.directory) / "keys"), Path(spec.directory), buckets=buckets)
    from dataspace.pkcs11 import Pkcs11EpochKeys  # the PKCS#11 library is imported only when configured

    return Vault(Pkcs11EpochKeys(spec), Path(spec.directory), buckets=buckets)


def _write_new(path: Path, data: bytes) -> bool:
    """Write ``data`` to a new file (mode 0600) durably; False if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileEpochKeys:
    """Epoch keys as files ``<bucket>-<generation>.key`` (32 random bytes, mode 0600) in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, bucket: int, generation: int) -> Path:
        return self.directory / f"{bucket}-{generation}.key"

    def generations(self, bucket: int) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob(f"{bucket}-*.key"))

    def inventory(self) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        if self.directory.exists():
            for name in os.listdir(self.directory):
                if name.endswith(".key"):
                    bucket, generation = name.removesuffix(".key").split("-")
                    found.setdefault(int(bucket), []).append(int(generation))
        return {b: sorted(g) for b, g in found.items()}

    def create(self, bucket: int, generation: int) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(self._path(bucket, generation), AESGCM.generate_key(bit_length=256))

    def destroy(self, bucket: int, generation: int) -> None:
        path = self._path(bucket, generation)
        try:
            with open(path, "r+b") as fh:  # overwrite before unlinking: no stale blocks on simple filesystems
                fh.write(b"\0" * 32)
                fh.flush()
                os.fsync(fh.fileno())
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.directory)

    def cipher(self, bucket: int, generation: int) -> EpochCipher | None:
        try:
            key = self._path(bucket, generation).read_bytes()
        except FileNotFoundError:
            return None
        if len(key) != 32:
            raise ConfigurationError(f"epoch key {bucket}-{generation} is malformed")
        return AESGCM(key)

    def spec(self) -> KeyStoreSpec:
        return KeyStoreSpec(backend="file", directory=str(self.directory.parent))


class Vault:
    """Seal, wrap and unwrap through the epoch keys of one key store; see the module doc."""

    def __init__(self, keys: EpochKeys, directory: Path, *, buckets: int = DEFAULT_BUCKETS) -> None:
        self.keys = keys
        self.directory = directory
        self.buckets = self._bucket_count(buckets)
        self._cache: dict[tuple[int, int], tuple[EpochCipher, float]] = {}
        self._lock = threading.Lock()

    def _bucket_count(self, default: int) -> int:
        """The bucket count is fixed when the store is first used: it is read back, never changed."""
        path = self.directory / "buckets"
        if not path.exists():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_new(path, str(default).encode())
        try:
            count = int(path.read_text())
        except ValueError as exc:
            raise ConfigurationError(f"{path} is malformed") from exc
        if count < 1:
            raise ConfigurationError(f"{path} is malformed")
        return count

    def spec(self) -> KeyStoreSpec:
        return self.keys.spec()

    def bucket(self, subject_id: int) -> int:
        return subject_id % self.buckets

    # --- epoch keys -----------------------------------------------------------------------------
    def _cipher(self, bucket: int, generation: int) -> EpochCipher | None:
        entry = self._cache.get((bucket, generation))
        now = time.monotonic()
        if entry is not None and entry[1] > now:
            return entry[0]
        cipher = self.keys.cipher(bucket, generation)
        with self._lock:
            if cipher is None:
                self._cache.pop((bucket, generation), None)
            else:
                self._cache[(bucket, generation)] = (cipher, now + CACHE_SECONDS)
        return cipher

    def inventory(self) -> dict[int, list[int]]:
        return self.keys.inventory()

    def has_key(self, bucket: int, generation: int) -> bool:
        return self._cipher(bucket, generation) is not None

    def current_generation(self, bucket: int) -> int:
        """The newest generation the store holds for the bucket (creating generation 0 if none)."""
        generations = self.keys.generations(bucket)
        if generations:
            return generations[-1]
        self.keys.create(bucket, 0)
        return 0

    def next_generation(self, bucket: int, current: int) -> int:
        """A key newer than ``current`` for a retirement: a newer one left by a crashed pass is reused."""
        newer = [g for g in self.keys.generations(bucket) if g > current]
        if newer:
            return newer[-1]
        self.keys.create(bucket, current + 1)
        return current + 1

    def destroy_older(self, bucket: int, generation: int) -> list[int]:
        """Destroy every key of the bucket older than ``generation``; returns the generations destroyed."""
        gone = [g for g in self.keys.generations(bucket) if g < generation]
        for g in gone:
            self.keys.destroy(bucket, g)
            with self._lock:
                self._cache.pop((bucket, g), None)
        return gone

    # --- data keys ------------------------------------------------------------------------------
    def new_data_key(self, subject_id: int, generation: int) -> tuple[bytes, bytes]:
        """Return ``(data_key, wrapped_data_key)``, wrapped under ``(bucket(subject_id), generation)``."""
        dek = AESGCM.generate_key(bit_length=256)
        return dek, self.wrap(dek, subject_id, generation)

    def wrap(self, dek: bytes, subject_id: int, generation: int) -> bytes:
        cipher = self._cipher(subject_id % self.buckets, generation)
        if cipher is None:
            raise ConfigurationError("the epoch key to wrap under is not in the key store")
        nonce = os.urandom(NONCE)
        return nonce + cipher.encrypt(nonce, dek, b"dek/v2/%d" % subject_id)

    def unwrap(self, wrapped: bytes, subject_id: int, generation: int) -> bytes:
        cipher = self._cipher(subject_id % self.buckets, generation)
        if cipher is None:
            raise DecryptionError
        try:
            return cipher.decrypt(wrapped[:NONCE], wrapped[NONCE:], b"dek/v2/%d" % subject_id)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError from exc

    def unwrap_all(self, subject_ids: list[int], epochs: list[int], wrapped: list[bytes]) -> list[bytes | None]:
        """Bulk ``unwrap`` for emission: each epoch cipher is looked up once per call, not once per row (that
        lookup and its expiry check cost a third of the per-subject time); ``None`` where a key won't open."""
        buckets = self.buckets
        ciphers: dict[int, EpochCipher | None] = {}
        out: list[bytes | None] = []
        append = out.append
        for sid, generation, blob in zip(subject_ids, epochs, wrapped, strict=True):
            slot = generation * buckets + sid % buckets
            try:
                cipher = ciphers[slot]
            except KeyError:
                cipher = ciphers[slot] = self._cipher(sid % buckets, generation)
            if cipher is None:
                append(None)
                continue
            try:
                append(cipher.decrypt(blob[:NONCE], blob[NONCE:], b"dek/v2/%d" % sid))
            except (InvalidTag, ValueError):
                append(None)
        return out

    # --- the re-wrap journal --------------------------------------------------------------------
    def _journal_path(self, bucket: int) -> Path:
        return self.directory / "rewrap" / f"{bucket}.json"

    def write_journal(self, bucket: int, generation: int, wrapped: Mapping[int, bytes]) -> None:
        """Replace the bucket's journal by these wrappings under ``generation`` (atomic rename)."""
        path = self._journal_path(bucket)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {
            "bucket": bucket,
            "generation": generation,
            "wrapped": {str(s): base64.b64encode(w).decode() for s, w in wrapped.items()},
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def read_journal(self, bucket: int) -> tuple[int, dict[int, bytes]] | None:
        """``(generation, {subject_id: wrapped})`` of the bucket's last retirement, or None."""
        try:
            body = json.loads(self._journal_path(bucket).read_text())
        except FileNotFoundError:
            return None
        return int(body["generation"]), {int(s): base64.b64decode(w) for s, w in body["wrapped"].items()}

    # --- profiles -------------------------------------------------------------------------------
    @staticmethod
    def seal(dek: bytes, plaintext: bytes, subject_id: int) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + AESGCM(dek).encrypt(nonce, plaintext, b"profile/v1/%d" % subject_id)

    @staticmethod
    def open(dek: bytes, sealed: bytes, subject_id: int) -> bytes:
        try:
            return AESGCM(dek).decrypt(sealed[:NONCE], sealed[NONCE:], b"profile/v1/%d" % subject_id)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError from exc


def file_vault(directory: Path, *, buckets: int = DEFAULT_BUCKETS) -> Vault:
    """The embedded default: epoch keys as files under ``directory/keys``."""
    return Vault(FileEpochKeys(directory / "keys"), directory, buckets=buckets)
