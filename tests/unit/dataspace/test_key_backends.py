"""The same key tests against both key stores: the key file directory and a PKCS#11 token (SoftHSM2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.exceptions import BadSignatureError

from dataspace.keys import KeyRing, load_key_file, save_key_file
from dataspace.keystore import KeyStoreSpec
from dataspace.vault import DecryptionError, Vault, open_store
from tests.softhsm import MODULE, TokenPool, softhsm  # noqa: F401  (the fixture)


@pytest.fixture(params=["file", "pkcs11"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> KeyStoreSpec:
    if request.param == "file":
        return KeyStoreSpec(backend="file", directory=str(tmp_path / "epochs"))
    pool: TokenPool = request.getfixturevalue("softhsm")
    return KeyStoreSpec(
        backend="pkcs11",
        directory=str(tmp_path / "epochs"),
        module=MODULE,
        token_label=pool.take(),
        pin_env="DATASPACE_TEST_PKCS11_PIN",
    )


def test_wrap_unwrap_binds_the_subject_and_the_store(spec, tmp_path):
    vault = open_store(spec, buckets=4)
    generation = vault.current_generation(vault.bucket(7))
    dek, wrapped = vault.new_data_key(7, generation)
    assert vault.unwrap(wrapped, 7, generation) == dek
    with pytest.raises(DecryptionError):
        vault.unwrap(wrapped, 11, generation)  # same bucket, another subject
    with pytest.raises(DecryptionError):
        vault.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), 7, generation)  # tampered
    other = open_store(KeyStoreSpec(backend="file", directory=str(tmp_path / "other")), buckets=4)
    other.current_generation(vault.bucket(7))
    with pytest.raises(DecryptionError):
        other.unwrap(wrapped, 7, generation)


def test_a_destroyed_epoch_key_is_gone_for_every_process(spec):
    vault = open_store(spec, buckets=4)
    _dek, wrapped = vault.new_data_key(5, vault.current_generation(1))
    assert vault.next_generation(1, 0) == 1
    assert vault.next_generation(1, 0) == 1  # a newer key left by a crashed pass is reused
    assert vault.inventory() == {1: [0, 1]}
    assert vault.destroy_older(1, 1) == [0]
    assert vault.inventory() == {1: [1]}
    with pytest.raises(DecryptionError):
        vault.unwrap(wrapped, 5, 0)
    fresh = Vault(vault.keys, Path(spec.directory))  # another process's view of the same store
    with pytest.raises(DecryptionError):
        fresh.unwrap(wrapped, 5, 0)


def test_rotation_rewraps_and_the_old_wrapping_stops_opening(spec):
    vault = open_store(spec, buckets=4)
    dek, wrapped = vault.new_data_key(6, vault.current_generation(2))
    new = vault.next_generation(2, 0)
    rewrapped = vault.wrap(vault.unwrap(wrapped, 6, 0), 6, new)
    vault.destroy_older(2, new)
    assert vault.unwrap(rewrapped, 6, new) == dek
    with pytest.raises(DecryptionError):
        vault.unwrap(wrapped, 6, 0)


@pytest.mark.parametrize("backend", ["file", "pkcs11"])
def test_signing_keys_sign_verify_rotate_and_survive_the_key_file(backend, tmp_path, monkeypatch, request):
    hsm = None
    if backend == "pkcs11":
        pool: TokenPool = request.getfixturevalue("softhsm")
        from dataspace.pkcs11 import configured_token

        monkeypatch.setenv("DATASPACE_PKCS11_MODULE", MODULE)
        monkeypatch.setenv("DATASPACE_PKCS11_TOKEN_LABEL", pool.take())
        monkeypatch.setenv("DATASPACE_PKCS11_PIN_ENV", "DATASPACE_TEST_PKCS11_PIN")
        hsm = configured_token()
    ring = KeyRing.generate(hsm)
    first = ring.signing_key
    signature = first.sign(b"receipt")
    ring.verify_keys()[first.kid].verify(b"receipt", signature)
    with pytest.raises(BadSignatureError):
        ring.verify_keys()[first.kid].verify(b"receipt!", signature)
    ring.rotate(hsm)
    assert ring.signing_key.kid != first.kid
    assert [k.kid for k in ring.signing_keys] == [ring.signing_key.kid, first.kid]
    path = tmp_path / "keys.json"
    save_key_file(path, ring)
    text = path.read_text()
    if backend == "pkcs11":
        assert '"seed"' not in text  # the private key never left the module
    again = load_key_file(path)
    sig2 = again.signing_key.sign(b"checkpoint")
    ring.verify_keys()[ring.signing_key.kid].verify(b"checkpoint", sig2)
    again.verify_keys()[first.kid].verify(b"receipt", signature)  # old keys still verify


def test_hsm_keys_cannot_be_read_out_of_the_token(softhsm, tmp_path):  # noqa: F811
    """The attack on the HSM backend: ask the token for the key bytes. It refuses (sensitive objects)."""
    import pkcs11

    from dataspace.pkcs11 import Pkcs11Ed25519Key, Pkcs11EpochKeys, Pkcs11TokenKey

    spec = KeyStoreSpec(
        backend="pkcs11",
        directory=str(tmp_path),
        module=MODULE,
        token_label=softhsm.take(),
        pin_env="DATASPACE_TEST_PKCS11_PIN",
    )
    keys = Pkcs11EpochKeys(spec)
    keys.create(0, 0)
    labels = [
        ("ds-epoch-0-0", pkcs11.ObjectClass.SECRET_KEY),
        (Pkcs11Ed25519Key.generate(keys.token, "now").label, pkcs11.ObjectClass.PRIVATE_KEY),
        ("ds-es256-" + Pkcs11TokenKey.generate(keys.token, "now").kid, pkcs11.ObjectClass.PRIVATE_KEY),
    ]
    for label, object_class in labels:
        obj = keys.token.find(label, object_class)
        assert obj is not None
        with pytest.raises(pkcs11.PKCS11Error):
            obj[pkcs11.Attribute.VALUE]
        assert obj[pkcs11.Attribute.EXTRACTABLE] is False
        assert obj[pkcs11.Attribute.SENSITIVE] is True
