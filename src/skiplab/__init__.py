"""skiplab: a library and laboratory for skip connections."""
from skiplab.registry import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]
