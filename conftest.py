"""Test-wide isolation (tests/ and the notebooks run by nbval): audit log, checkpoint key,
pseudonym secret and policy live in a fresh temporary data folder, never the user's."""

import os
import tempfile

for _var in (
    "MEDSEC_AUDIT_LOG",
    "MEDSEC_AUDIT_CHECKPOINTS",
    "MEDSEC_AUDIT_CHECKPOINT_KEY",
    "MEDSEC_POLICY",
    "MEDSEC_PURPOSE",
    "MEDSEC_AUDIT_CHECKPOINT_EVERY",
):
    os.environ.pop(_var, None)
os.environ["MEDSEC_DATA_DIR"] = tempfile.mkdtemp(prefix="medsec-test-data-")
