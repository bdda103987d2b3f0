"""What the key store costs: the key file directory vs a PKCS#11 module (SoftHSM2), side by side.

    .venv/bin/python bench/keys.py                 # needs softhsm2 (apt-get install softhsm2)
    .venv/bin/python bench/keys.py --subjects 20000

Per consent change: one receipt signature (Ed25519). Per access token: one ES256 signature. Per job: one
data-key unwrap per subject (emission's bulk path, Vault.unwrap_all; the rest of emission does not touch the
key store). Per erasure: the retirement of one bucket (unwrap + wrap of each of its other subjects; about
2,500 at 10M subjects and 4096 buckets). SoftHSM runs in-process, so these are the cost of the PKCS#11 call
path and the token's software crypto; a network HSM adds its round trip.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _report  # noqa: E402

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "bench-pin-1234"


def _softhsm(directory: Path) -> None:
    (directory / "tokens").mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is loaded
    os.environ["BENCH_PKCS11_PIN"] = PIN
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin", "12345678", "--pin", PIN],
        check=True,
        capture_output=True,
    )


def _per_op(fn, count: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - t0) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=20_000, help="unwraps timed per backend")
    parser.add_argument("--signatures", type=int, default=2_000)
    parser.add_argument("--bucket", type=int, default=2_500, help="subjects re-wrapped by one retirement")
    args = parser.parse_args()

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from dataspace.keys import Ed25519Key, TokenKey
    from dataspace.keystore import KeyStoreSpec
    from dataspace.pkcs11 import Pkcs11Ed25519Key, Pkcs11Token, Pkcs11TokenKey
    from dataspace.vault import open_store

    tmp = Path(tempfile.mkdtemp(prefix="dataspace-bench-keys-"))
    _softhsm(tmp / "hsm")
    specs = {
        "file": KeyStoreSpec(backend="file", directory=str(tmp / "file")),
        "pkcs11": KeyStoreSpec(
            backend="pkcs11", directory=str(tmp / "p11"), module=MODULE, token_label="bench", pin_env="BENCH_PKCS11_PIN"
        ),
    }
    token = Pkcs11Token.open(MODULE, "bench", PIN)
    signers = {"file": Ed25519Key.generate(), "pkcs11": Pkcs11Ed25519Key.generate(token, "bench")}
    jwt_keys = {"file": TokenKey.generate().private_key, "pkcs11": Pkcs11TokenKey.generate(token, "bench").private_key}
    rows: dict[str, dict[str, float]] = {}
    for name, spec in specs.items():
        vault = open_store(spec, buckets=1)
        generation = vault.current_generation(0)
        wrapped = [vault.new_data_key(sid, generation)[1] for sid in range(args.subjects)]
        sids = list(range(args.subjects))
        t0 = time.perf_counter()
        deks = vault.unwrap_all(sids, [generation] * len(sids), wrapped)  # emission's bulk path
        unwrap = (time.perf_counter() - t0) / args.subjects
        assert None not in deks
        new = vault.next_generation(0, generation)
        part = wrapped[: args.bucket]
        t0 = time.perf_counter()
        for sid, blob in enumerate(part):
            vault.wrap(vault.unwrap(blob, sid, generation), sid, new)
        retire = time.perf_counter() - t0
        sign = _per_op(lambda s=signers[name]: s.sign(b"receipt " * 40), args.signatures)
        jwt = _per_op(
            lambda k=jwt_keys[name]: k.sign(b"header.claims" * 30, ec.ECDSA(hashes.SHA256())), args.signatures
        )
        rows[name] = {"sign": sign, "unwrap": unwrap, "retire": retire, "jwt": jwt}

    f, p = rows["file"], rows["pkcs11"]
    print(f"key store cost, file vs PKCS#11 (SoftHSM2), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'':44}{'file':>12}{'SoftHSM':>12}{'ratio':>8}")
    print(
        f"{'per consent change: receipt signature':44}{f['sign'] * 1e6:>10.0f}us{p['sign'] * 1e6:>10.0f}us"
        f"{p['sign'] / f['sign']:>7.1f}x"
    )
    print(
        f"{'per access token: ES256 signature':44}{f['jwt'] * 1e6:>10.0f}us{p['jwt'] * 1e6:>10.0f}us"
        f"{p['jwt'] / f['jwt']:>7.1f}x"
    )
    print(
        f"{'per job and subject: data-key unwrap':44}{f['unwrap'] * 1e6:>10.1f}us{p['unwrap'] * 1e6:>10.1f}us"
        f"{p['unwrap'] / f['unwrap']:>7.1f}x"
    )
    print(
        f"{'per job of 1M subjects: unwraps (1 CPU)':44}{f['unwrap'] * 1e6:>11.1f}s{p['unwrap'] * 1e6:>11.1f}s"
        f"{p['unwrap'] / f['unwrap']:>7.1f}x"
    )
    print(
        f"{f'per erasure: retire a bucket of {args.bucket:,}':44}{f['retire'] * 1e3:>10.0f}ms"
        f"{p['retire'] * 1e3:>10.0f}ms{p['retire'] / f['retire']:>7.1f}x"
    )
    _report.peak_rss()


if __name__ == "__main__":
    main()
