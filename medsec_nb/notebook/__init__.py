"""The notebook face: magics, redacted displays, widgets, the kernel study registry, kernel hardening."""
