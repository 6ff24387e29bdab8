"""Regenerate ``transit_stanza.json`` deterministically: ``python tests/vectors/make_transit_vector.py``.

One ``transit-rsa-oaep`` stanza (docs/FORMAT.md, "Stanzas"): an RSA-3072 key standing in for
a Transit key's version 3, made from a fixed seed, and all randomness from a fixed stream, so
every run writes the same bytes. The private key is derived here only to test the vector: a
real Transit key's private half never leaves OpenBao.
"""

from __future__ import annotations

import json
from pathlib import Path

from make_vectors import identity_from, stream

from medsec_nb.keys.transit import TYPE, TransitRecipient

HERE = Path(__file__).resolve().parent


def main(out: Path = HERE / "transit_stanza.json") -> None:
    key = {"type": "rsa3072", "seed": "transit-1"}
    ident = identity_from(key)
    study_key, file_id = stream("transit study key")(32), stream("transit file id")(16)
    recipient = TransitRecipient(ident.public.key, "site-a", 3)
    stanza = TYPE.wrap(study_key, recipient, file_id, stream("transit wrap"))
    vector = {
        "key": key,
        "transit": recipient.name,
        "version": recipient.version,
        "study_key": study_key.hex(),
        "file_id": file_id.hex(),
        "rand": "transit wrap",
        "stanza": stanza,
    }
    out.write_text(json.dumps(vector, indent=2) + "\n")


if __name__ == "__main__":
    main()
