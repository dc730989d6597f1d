"""The diagnostic checks, one module per family; each function is listed in ``analysis.registry.CHECKS``."""
