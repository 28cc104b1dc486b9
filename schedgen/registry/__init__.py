"""Registries: publish schedule stores on object storage and fetch them back, verified.

Layout under a registry root (any fsspec URL; ``http(s)://`` read-only)::

    <root>/index.json                  the catalog: {"format": "schedgen-index-1",
                                       "entries": {key: {name, digest, content, method,
                                       dataset, k, epochs, created, schedgen_version, ...}}}
    <root>/<name>/...                  the store's files, as written by schedgen
    <root>/<name>/manifest.json        {"format": "schedgen-manifest-1", name, store, key,
                                       digest, attributes_digest, content,
                                       files: [{path, sha256, size}, ...]}

``name`` is ``<local store name without .zarr>-<content[:32]>.zarr``, ``content`` the
sha256 of the manifest's file list (:mod:`._manifest`): different bytes, different name.
The catalog key is the cache key part of a built store's name (16 hex digits).

Order of a push: files, then the manifest (a store without one is invisible: ``pull``
and ``list`` refuse or skip it), then the catalog entry by a conditional write
(:mod:`._remote`). ``pull`` and :func:`fetch` check every file against the manifest and
the store against its own digests before renaming it into place.

A push uploads only what a schedule store holds (``zarr.json``; each array's
``zarr.json`` and ``c/...`` chunks): any other file in the store folder is refused. The
catalog is untrusted: each entry's fields are checked (a name must be a content-addressed
``NAME-<32 hex>.zarr``), and ``list --verify`` checks every store (remote ones fetched
into the cache, local and ``file://`` ones where they are) and the entry against its
manifest and store.

Known limits: files of a push killed before its manifest stay in the registry (the next
push of that store overwrites them; nothing removes the files of a store never pushed
again); ``gs://`` and other protocols without a conditional write here can be read but
not pushed to; no catalog entry is lost to concurrent pushes only where the backend's
precondition check is atomic (Amazon S3; not moto: see :mod:`._remote`).
"""

from __future__ import annotations

from ._manifest import MANIFEST, MANIFEST_FORMAT, FileEntry, Manifest, content_digest
from ._ops import (
    INDEX,
    INDEX_FORMAT,
    PullResult,
    PushResult,
    default_cache_dir,
    fetch,
    is_registry,
    list_registry,
    pull,
    push,
    read_index,
    registry_store,
)
from ._remote import DEFAULT_TIMEOUT, display_url

__all__ = [
    "display_url",
    "push",
    "pull",
    "fetch",
    "list_registry",
    "read_index",
    "is_registry",
    "registry_store",
    "default_cache_dir",
    "PushResult",
    "PullResult",
    "Manifest",
    "FileEntry",
    "content_digest",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "INDEX",
    "INDEX_FORMAT",
    "DEFAULT_TIMEOUT",
]
