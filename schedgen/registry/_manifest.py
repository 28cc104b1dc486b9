"""The manifest of a pushed store and its content-addressed name.

``<name>/manifest.json`` lists every file of the store (its path inside the store,
sha256 and size), the store's schedule digest and attributes digest, its catalog key
and ``content``: the sha256 of the canonical JSON of the file list. The name is
``<stem>-<content[:32]>.zarr``, ``<stem>`` being the local store's name without
``.zarr`` (which for a built store ends in its cache key, ``...-k50-61ef59f453e7a1d9``):
two stores whose files differ in any byte never share a name (128 bits of the content
hash in the name, all 256 checked against the manifest on every pull), and a listing
still says what a store is. The manifest holds no time and no credentials: the same
store gives the same manifest bytes, so pushing it twice is a no-op.

A manifest read from a registry is untrusted: its size, format, every path (relative,
no ``..``, a plain character set) and every number are checked, and its ``content``
is recomputed from its file list, before any of it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..store import canonical_json, read_attrs, read_schedule

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "schedgen-manifest-1"
#: Largest manifest a reader parses (one line per file: a store has a few dozen).
MAX_MANIFEST_BYTES = 16 << 20
MAX_FILES = 200_000
MAX_FILE_BYTES = 1 << 40

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_PATH = re.compile(rf"{_PART}(/{_PART})*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.zarr")
#: A pushed store's name: ``<stem>-<content[:32]>.zarr`` (what a catalog entry may name).
STORE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,300}-[0-9a-f]{32}\.zarr")
#: A chunk of an array, relative to the array's folder: zarr v3's default chunk key
#: encoding, as :mod:`schedgen.store` writes it (``c/0``, ``c/0/0``; ``c`` for a 0-d array).
_CHUNK = re.compile(r"c(/\d{1,19})*")
_KEY = re.compile(r"-k\d+-([0-9a-f]{16})$")
_CONTENT_SUFFIX = re.compile(r"-[0-9a-f]{32}$")


@dataclass(frozen=True)
class FileEntry:
    """One file of a store: ``path`` inside it (``/``-separated), ``sha256``, ``size``."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says (see the module docstring)."""

    name: str
    store: str
    key: str
    digest: str
    attributes_digest: str | None
    content: str
    files: tuple[FileEntry, ...]

    @property
    def n_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_bytes(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "store": self.store,
            "key": self.key,
            "digest": self.digest,
            "attributes_digest": self.attributes_digest,
            "content": self.content,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "Manifest":
        """Parse and check a manifest; StoreError on any defect."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise StoreError(f"{where}: manifest is {len(data)} bytes; expected at most {MAX_MANIFEST_BYTES}")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise StoreError(f"{where}: manifest is not JSON: {' '.join(str(exc).split())[:200]}") from None
        if not isinstance(doc, dict):
            raise StoreError(f"{where}: manifest must be a JSON object, got {type(doc).__name__}")
        if doc.get("format") != MANIFEST_FORMAT:
            raise StoreError(f"{where}: manifest format must be {MANIFEST_FORMAT!r}, got {str(doc.get('format'))[:80]!r}")
        name, store, key = doc.get("name"), doc.get("store"), doc.get("key")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise StoreError(f"{where}: manifest name must be a plain NAME.zarr, got {str(name)[:80]!r}")
        if not isinstance(store, str) or not isinstance(key, str) or len(store) > 400 or len(key) > 100:
            raise StoreError(f"{where}: manifest 'store' and 'key' must be short strings")
        digest, adigest, content = doc.get("digest"), doc.get("attributes_digest"), doc.get("content")
        for field, val in (("digest", digest), ("content", content), ("attributes_digest", adigest)):
            if not (isinstance(val, str) and _HEX64.fullmatch(val)) and not (field == "attributes_digest" and val is None):
                raise StoreError(f"{where}: manifest {field!r} must be 64 lowercase hex digits, got {str(val)[:80]!r}")
        raw = doc.get("files")
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_FILES:
            raise StoreError(f"{where}: manifest 'files' must be a list of 1..{MAX_FILES} entries")
        files = []
        for f in raw:
            if not isinstance(f, dict) or set(f) != {"path", "sha256", "size"}:
                raise StoreError(f"{where}: manifest file entries must be {{path, sha256, size}}, got {str(f)[:120]}")
            p, h, n = f["path"], f["sha256"], f["size"]
            if not isinstance(p, str) or not _PATH.fullmatch(p) or ".." in p.split("/") or p == MANIFEST:
                raise StoreError(f"{where}: manifest lists a file path that is not allowed: {str(p)[:120]!r}")
            if not isinstance(h, str) or not _HEX64.fullmatch(h):
                raise StoreError(f"{where}: manifest sha256 of {p} must be 64 lowercase hex digits, got {str(h)[:80]!r}")
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_FILE_BYTES:
                raise StoreError(f"{where}: manifest size of {p} must be an integer in [0, 2**40], got {str(n)[:40]}")
            files.append(FileEntry(p, h, n))
        paths = [f.path for f in files]
        if paths != sorted(set(paths)):
            raise StoreError(f"{where}: manifest files must be sorted by path, each once")
        m = cls(name, store, key, digest, adigest, content, tuple(files))
        actual = content_digest(m.files)
        if actual != content:
            raise StoreError(
                f"{where}: manifest content digest mismatch (stored {content[:16]}..., computed {actual[:16]}...): "
                "the manifest was modified"
            )
        if not name.endswith(f"-{content[:32]}.zarr"):
            raise StoreError(f"{where}: manifest name {name} does not carry its content digest {content[:32]}")
        return m


def content_digest(files) -> str:
    """sha256 of the canonical JSON of ``[{path, sha256, size}, ...]`` (sorted by path)."""
    listing = [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files]
    return hashlib.sha256(canonical_json(listing)).hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def is_store_file(rel: str, arrays) -> bool:
    """Whether ``rel`` is a file a schedule store holds: the group's ``zarr.json``, and
    for each array of ``arrays`` its ``zarr.json`` and its chunks (``<array>/c/...``)."""
    head, _, tail = rel.partition("/")
    if not tail:
        return rel == "zarr.json"
    return head in arrays and (tail == "zarr.json" or bool(_CHUNK.fullmatch(tail)))


def local_files(store: Path, arrays=None) -> list[tuple[Path, FileEntry]]:
    """Every regular file of the local ``store`` (but a top-level ``manifest.json``),
    sorted by path. The store was read and checked first (no links out, no FIFOs).

    With ``arrays`` (the store's array names), a file that is not part of the store
    (:func:`is_store_file`: a stray ``creds.txt``, an editor's backup) is refused, so that
    only what schedgen wrote is ever uploaded.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(store):
        dirnames.sort()
        for fn in filenames:
            full = Path(dirpath) / fn
            rel = full.relative_to(store).as_posix()
            if rel == MANIFEST:
                continue
            if arrays is not None and not is_store_file(rel, arrays):
                raise StoreError(
                    f"{store}: {rel} is not part of a schedule store (expected zarr.json and the arrays "
                    f"{', '.join(sorted(arrays))}: their zarr.json and chunks c/...); remove it before pushing"
                )
            if not _PATH.fullmatch(rel):
                raise StoreError(f"{store}: file {rel!r} has a name a registry does not allow (letters, digits, _ . -)")
            digest, size = sha256_file(full)
            out.append((full, FileEntry(rel, digest, size)))
    return sorted(out, key=lambda t: t[1].path)


def catalog_key(stem: str, attributes_digest: str | None, digest: str) -> str:
    """The catalog key: the cache key part of a built store's name (``-k<k>-<16 hex>``);
    for a store named otherwise, ``attrs-`` and 16 hex of its attributes digest (or of
    its schedule digest for a format-1 store)."""
    m = _KEY.search(stem)
    if m:
        return m.group(1)
    return "attrs-" + (attributes_digest or digest)[:16]


def make_manifest(store: str | os.PathLike) -> tuple[Manifest, list[Path]]:
    """Read and check the local ``store`` (digests included), hash its files.

    Returns the manifest and the local files in manifest order.
    """
    p = Path(store)
    s = read_schedule(p, verify=True)  # a broken store is refused before anything is uploaded
    attrs = read_attrs(p)
    arrays = {"indices", "batch_offsets", "epoch_offsets", *s.batch_arrays, *s.epoch_arrays}
    pairs = local_files(p, arrays)
    if not pairs:
        raise StoreError(f"{p}: the store holds no file")
    files = tuple(e for _, e in pairs)
    content = content_digest(files)
    stem = _CONTENT_SUFFIX.sub("", p.name.rstrip("/").removesuffix(".zarr"))
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "store"
    adigest = attrs.get("attributes_digest")
    adigest = adigest if isinstance(adigest, str) and _HEX64.fullmatch(adigest) else None
    m = Manifest(
        name=f"{stem}-{content[:32]}.zarr", store=p.name, key=catalog_key(stem, adigest, s.digest),
        digest=s.digest, attributes_digest=adigest, content=content, files=files,
    )
    return m, [f for f, _ in pairs]
