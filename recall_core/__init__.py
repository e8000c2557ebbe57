"""recall_core: representation-aware, layer-wise model merging after the RECALL method.

The library half of RECALL Studio: no UI imports here. See docs/ARCHITECTURE.md for the modules.
"""

__version__ = "0.1.0"
