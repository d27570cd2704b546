"""Backends run a request on loaded components. One backend per model family, chosen by `ModelSpec.family`."""

from __future__ import annotations


def backend_class(family: str):
    """Returns the backend class for a family name (imported lazily: torch and diffusers are heavy)."""
    from pintor.errors import PintorError

    if family in ("kandinsky-2.2", "kandinsky-2.1"):
        from pintor.backends.kandinsky import KandinskyBackend

        return KandinskyBackend
    if family == "diffusers-auto":
        from pintor.backends.auto import AutoBackend

        return AutoBackend
    raise PintorError(f"unknown model family {family!r}: expected kandinsky-2.2, kandinsky-2.1 or diffusers-auto")
