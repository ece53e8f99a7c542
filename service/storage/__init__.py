"""Artifact stores behind one small interface, chosen by URI scheme."""

from __future__ import annotations

from service.storage.base import ArtifactStore, ObjectNotFound, StoreError, open_store

__all__ = ["ArtifactStore", "ObjectNotFound", "StoreError", "open_store"]
