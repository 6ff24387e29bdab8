"""PS3.15 Annex E de-identification engine (Basic Profile and its ten options) and leak scanner."""

from .engine import OPTIONS, Profile, deidentify, display_action, resolve
from .keyed import DeidKeys
from .scan import find_leaks, identifying_values

__all__ = [
    "OPTIONS",
    "DeidKeys",
    "Profile",
    "deidentify",
    "display_action",
    "find_leaks",
    "identifying_values",
    "resolve",
]
