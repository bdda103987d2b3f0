from __future__ import annotations

import os
import stat

import pytest

from dataspace.errors import ConfigurationError, Conflict
from dataspace.keys import KeyRing, create_key_file, load_key_file
from dataspace.vault import DecryptionError, Vault, file_vault


def test_key_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "keys.json"
    ring = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(Conflict):
        create_key_file(path)
    assert load_key_file(path).pseudonym_key == ring.pseudonym_key


def test_world_readable_key_file_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    create_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError):
        load_key_file(path)


def test_repr_hides_key_bytes():
    ring = KeyRing.generate()
    text = repr(ring) + repr(ring.signing_keys[0]) + repr(ring.token_keys[0])
    assert ring.pseudonym_key.hex() not in text
    assert ring.signing_keys[0].seed.hex() not in text
    assert "PRIVATE" not in text


def test_partner_pseudonym_keys_differ_per_partner():
    ring = KeyRing.generate()
    assert ring.partner_pseudonym_key("a") != ring.partner_pseudonym_key("b")
    assert ring.partner_pseudonym_key("a") == ring.partner_pseudonym_key("a")


def test_envelope_round_trip_and_binding(tmp_path):
    vault = file_vault(tmp_path / "epochs", buckets=4)
    generation = vault.current_generation(vault.bucket(7))
    dek, wrapped = vault.new_data_key(7, generation)
    assert vault.unwrap(wrapped, 7, generation) == dek
    with pytest.raises(DecryptionError):
        vault.unwrap(wrapped, 11, generation)  # bound to the subject id (11 is in the same bucket as 7)
    sealed = Vault.seal(dek, b"secret", 7)
    assert b"secret" not in sealed
    assert Vault.open(dek, sealed, 7) == b"secret"
    with pytest.raises(DecryptionError):
        Vault.open(dek, sealed, 8)
    with pytest.raises(DecryptionError):
        file_vault(tmp_path / "other", buckets=4).unwrap(wrapped, 7, generation)  # another key store


def test_bucket_count_is_fixed_when_the_store_is_created(tmp_path):
    assert file_vault(tmp_path, buckets=8).buckets == 8
    assert file_vault(tmp_path, buckets=4096).buckets == 8  # read back, never changed


def test_a_destroyed_epoch_key_is_gone_from_the_store_and_opens_nothing(tmp_path):
    vault = file_vault(tmp_path, buckets=4)
    _dek, wrapped = vault.new_data_key(5, vault.current_generation(1))
    assert vault.next_generation(1, 0) == 1
    assert vault.next_generation(1, 0) == 1  # a newer key left by a crashed pass is reused, not doubled
    assert vault.destroy_older(1, 1) == [0]
    assert not list(tmp_path.glob("keys/1-0.key"))
    with pytest.raises(DecryptionError):
        vault.unwrap(wrapped, 5, 0)
    assert vault.inventory() == {1: [1]}


def test_epoch_key_files_are_private(tmp_path):
    vault = file_vault(tmp_path, buckets=4)
    vault.current_generation(0)
    assert stat.S_IMODE((tmp_path / "keys" / "0-0.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
