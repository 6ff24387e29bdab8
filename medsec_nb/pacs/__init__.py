"""Studies in and out of a PACS: pull (DICOMweb, DIMSE) into a container, receive (C-STORE SCP), push de-identified."""
