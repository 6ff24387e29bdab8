"""The key service face (docs/KEYSERVICE.md): ``medsec keyservice`` holds the site keys, the
site policy and the authoritative audit log under its own OS user, learns who asks from the
kernel (``SO_PEERCRED``), decides, records, and only then releases a study key."""

from .server import KeyServiceConfig, serve

__all__ = ["KeyServiceConfig", "serve"]
