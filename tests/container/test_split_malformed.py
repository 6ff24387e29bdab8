"""``split_instance`` on an instance with malformed image attributes (as a hostile PACS may send): a SourceError
naming the instance, never a bare TypeError or ValueError from deep inside (review item 4)."""

from __future__ import annotations

import pytest

from medsec_nb.container.sources import dataset_bytes, split_instance
from medsec_nb.core.errors import SourceError
from medsec_nb.testdata import synthesize_datasets


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "BitsAllocated", "SamplesPerPixel"])
def test_an_empty_image_attribute_is_a_source_error(keyword):
    ds = synthesize_datasets(1, rows=16, columns=16)[0]
    setattr(ds, keyword, None)  # present, zero length
    with pytest.raises(SourceError, match=r"^instance 2: malformed image attributes$"):
        split_instance(dataset_bytes(ds), "IM00002.dcm", "instance 2")


def test_a_well_formed_instance_still_splits():
    ds = synthesize_datasets(1, rows=16, columns=16)[0]
    inst = split_instance(dataset_bytes(ds), "IM00001.dcm", "instance 1")
    assert inst.entry["image"]["rows"] == 16 and inst.value_length == 16 * 16 * 2
