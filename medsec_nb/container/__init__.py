"""The ``.msec`` encrypted study container (specified in docs/FORMAT.md)."""
