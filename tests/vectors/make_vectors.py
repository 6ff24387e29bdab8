"""Regenerate the format test vectors deterministically: ``python tests/vectors/make_vectors.py``.

Keys and all randomness come from fixed seeds (SHAKE256), so every run writes the same
bytes. The input is pydicom's bundled MR_small.dcm (fake patient), copied alone. Also writes
``cohort_transport.json``: a cohort transport round and one sealed study key (docs/COHORT.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from Crypto.Hash import SHAKE256
from Crypto.Protocol import DH
from Crypto.PublicKey import ECC, RSA
from Crypto.Signature import eddsa
from pydicom.data import get_testdata_file

from medsec_nb import Identity, encrypt_study, inspect_study

HERE = Path(__file__).resolve().parent


def stream(label: str):
    """A deterministic randfunc for vectors only."""
    xof = SHAKE256.new(b"medsec-nb test vector " + label.encode())
    return xof.read


def seed_hex(label: str, n: int = 32) -> str:
    return stream("seed " + label)(n).hex()


def identity_from(spec: dict) -> Identity:
    kind = spec["type"]
    if kind == "x25519":
        return Identity(DH.import_x25519_private_key(bytes.fromhex(spec["private_key"])))
    if kind == "p256":
        return Identity(ECC.construct(curve="P-256", d=int(spec["private_key"], 16)))
    if kind == "ed25519":
        return Identity(eddsa.import_private_key(bytes.fromhex(spec["private_key"])))
    if kind == "rsa3072":
        return Identity(RSA.generate(3072, randfunc=stream("rsa " + spec["seed"])))
    raise ValueError(kind)


def p256_scalar(label: str) -> str:
    n = int(ECC._curves["p256"].order)
    return "%064x" % (int(seed_hex(label), 16) % (n - 1) + 1)


VECTORS = [
    {
        "name": "x25519_signed_ed25519",
        "chunk_size": 1 << 20,
        "unlock": {"type": "x25519", "private_key": seed_hex("x25519")},
        "signer": {"type": "ed25519", "private_key": seed_hex("ed25519")},
    },
    {
        "name": "p256_signed_p256_small_chunks",
        "chunk_size": 4096,
        "unlock": {"type": "p256", "private_key": p256_scalar("p256")},
        "signer": {"type": "p256", "private_key": p256_scalar("p256 signer")},
    },
    {"name": "rsa3072", "chunk_size": 1 << 20, "unlock": {"type": "rsa3072", "seed": "rsa-1"}},
    {
        "name": "passphrase",
        "chunk_size": 1 << 20,
        "unlock": {"type": "passphrase", "passphrase": "correct horse battery staple", "log_n": 10},
    },
]


def transport_vector() -> dict:
    """One transport round for one worker, and one study key sealed in it."""
    from medsec_nb.cohort.transport import Transport

    worker = {"type": "x25519", "private_key": seed_hex("cohort worker")}
    study_key, url = stream("cohort study key")(32), "s3://bucket/studies/study0.msec"
    t = Transport.new([identity_from(worker).public], rand=stream("cohort transport"))
    tid_hex, stanzas = t.public()
    return {
        "worker": worker,
        "study_key": study_key.hex(),
        "url": url,
        "expect": {"tid": tid_hex, "stanzas": stanzas, "sealed": t.seal(study_key, url)},
    }


def main(out: Path = HERE) -> None:
    src_file = Path(get_testdata_file("MR_small.dcm"))
    original = src_file.read_bytes()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "study"
        src.mkdir()
        shutil.copy(src_file, src / "MR_small.dcm")
        for v in VECTORS:
            unlock = v["unlock"]
            kwargs: dict = {}
            if unlock["type"] == "passphrase":
                kwargs.update(passphrase=unlock["passphrase"], scrypt_log_n=unlock["log_n"])
            else:
                kwargs["recipients"] = [identity_from(unlock).public]
            signer = identity_from(v["signer"]) if "signer" in v else None
            dest = out / f"{v['name']}.msec"
            encrypt_study(
                src,
                dest,
                signer=signer,
                chunk_size=v["chunk_size"],
                progress=False,
                workers=1,
                _rand=stream(v["name"]),
                **kwargs,
            )
            info = inspect_study(dest)
            records.append(
                {
                    **v,
                    "file": dest.name,
                    "container_sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
                    "expect": {
                        "instance_count": 1,
                        "signer": signer.key_id if signer else None,
                        "recipients": info.recipients,
                        "instances": [
                            {
                                "path": "MR_small.dcm",
                                "sha256": hashlib.sha256(original).hexdigest(),
                                "size": len(original),
                            }
                        ],
                    },
                }
            )
    (out / "vectors.json").write_text(json.dumps({"format_version": 1, "vectors": records}, indent=2) + "\n")
    (out / "cohort_transport.json").write_text(json.dumps(transport_vector(), indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
