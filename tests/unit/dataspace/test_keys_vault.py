from __future__ import annotations

import os
import stat

import pytest

from dataspace.errors import ConfigurationError, Conflict
from dataspace.keys import KeyRing, create_key_file, load_key_file
from dataspace.vault import DecryptionError, Vault


def test_key_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "keys.json"
    ring = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(Conflict):
        create_key_file(path)
    assert load_key_file(path).master_key == ring.master_key


def test_world_readable_key_file_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    create_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError):
        load_key_file(path)


def test_repr_hides_key_bytes():
    ring = KeyRing.generate()
    text = repr(ring) + repr(ring.signing_keys[0]) + repr(ring.token_keys[0])
    assert ring.master_key.hex() not in text
    assert ring.signing_keys[0].seed.hex() not in text
    assert "PRIVATE" not in text


def test_partner_pseudonym_keys_differ_per_partner():
    ring = KeyRing.generate()
    assert ring.partner_pseudonym_key("a") != ring.partner_pseudonym_key("b")
    assert ring.partner_pseudonym_key("a") == ring.partner_pseudonym_key("a")


def test_envelope_round_trip_and_binding():
    vault = Vault(os.urandom(32))
    dek, wrapped = vault.new_data_key(7)
    assert vault.unwrap(wrapped, 7) == dek
    with pytest.raises(DecryptionError):
        vault.unwrap(wrapped, 8)  # bound to the subject id
    sealed = Vault.seal(dek, b"secret", 7)
    assert b"secret" not in sealed
    assert Vault.open(dek, sealed, 7) == b"secret"
    with pytest.raises(DecryptionError):
        Vault.open(dek, sealed, 8)
    with pytest.raises(DecryptionError):
        Vault(os.urandom(32)).unwrap(wrapped, 7)  # another master key
