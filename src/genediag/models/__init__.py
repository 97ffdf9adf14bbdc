"""Model factory: every branch builds its networks through :func:`create_model`."""

from genediag.models.factory import create_model, register_model, registered_models

__all__ = ["create_model", "register_model", "registered_models"]
