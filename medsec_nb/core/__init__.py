"""The bottom layer: errors, atomic writes, the process runtime (folders, verified OS user,
Jupyter context, version)."""
