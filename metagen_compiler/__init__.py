"""metagenc: the MetaGen Spec Language compiler."""

__version__ = "0.1.0"
__all__ = ["__version__"]
