"""push, pull, fetch and the catalog of a registry (see the package docstring)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .._proc import temporary_sibling
from ..errors import ParameterError, StoreError
from ..store import read_attrs, read_schedule
from ._manifest import MANIFEST, MAX_MANIFEST_BYTES, STORE_NAME, Manifest, make_manifest
from ._remote import DEFAULT_TIMEOUT, Location, resolve

INDEX = "index.json"
INDEX_FORMAT = "schedgen-index-1"
MAX_INDEX_BYTES = 64 << 20

#: Test hook, called as ``_AFTER_UPLOAD(i, path)`` after each store file is uploaded
#: (the killed-push test sleeps there). None in normal use.
_AFTER_UPLOAD: Callable[[int, str], None] | None = None


@dataclass(frozen=True)
class PushResult:
    """What :func:`push` did: the store's ``url`` in the registry, its ``name``, catalog
    ``key``, ``content`` and schedule ``digest``, ``files``/``n_bytes`` of the store,
    ``uploaded`` (False when the registry already held this content), ``seconds``."""

    url: str
    name: str
    key: str
    content: str
    digest: str
    files: int
    n_bytes: int
    uploaded: bool
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull` did: the local ``path``, the store's ``name``, ``content`` and
    ``digest``, ``files``/``n_bytes`` downloaded and verified, ``downloaded`` (False when
    ``path`` already held this content), ``seconds``."""

    path: str
    name: str
    content: str
    digest: str
    files: int
    n_bytes: int
    downloaded: bool
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/schedgen/registry`` (``~/.cache/schedgen/registry`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "schedgen" / "registry"


# --------------------------------------------------------------------------- push


def push(store: str | os.PathLike, url: str, *, storage_options: dict | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> PushResult:
    """Publish a local store to the registry at ``url``.

    The store is read and verified, its files hashed; they are uploaded to
    ``<url>/<name>/`` (``name`` content-addressed, :mod:`._manifest`), then
    ``<name>/manifest.json`` is written, last, and the catalog ``<url>/index.json`` gets
    the store's entry by a conditional write. A push interrupted at any point leaves no
    manifest (the store is invisible) or no catalog entry (the next push adds it); a
    registry that already holds the manifest of this content uploads nothing.

    Parameters
    ----------
    store : str or os.PathLike
        A local schedule store (``.zarr`` folder).
    url : str
        The registry root: ``s3://bucket/prefix``, ``file:///path`` or a local path.
    storage_options : dict, optional
        For the fsspec filesystem (``endpoint_url``, credentials, ...); never written anywhere.
    timeout : float
        Seconds for a connection and each response.

    Returns
    -------
    PushResult

    Raises
    ------
    ParameterError
        A bad URL, or a registry that cannot be written (http(s), no conditional writes).
    StoreError
        A local store that fails its checks, an unreachable endpoint, a name clash.
    """
    t0 = time.perf_counter()
    if not isinstance(store, (str, os.PathLike)) or "://" in os.fspath(store):
        raise ParameterError(f"push needs a local store folder as STORE, got {str(store)[:200]!r}")
    reg = resolve(url, storage_options, timeout=timeout, write=True)
    manifest, local = make_manifest(store)
    attrs = read_attrs(store)
    target = reg.child(manifest.name)
    existing = _read_manifest(target, missing_ok=True)
    if existing is not None and existing.content != manifest.content:  # 128 bits of the name agree
        raise StoreError(
            f"cannot push to {target.url}: it holds content {existing.content[:16]}..., expected "
            f"{manifest.content[:16]}... (a content-hash prefix collision or a forged manifest)"
        )
    uploaded = existing is None
    if uploaded:
        for i, (path, entry) in enumerate(zip(local, manifest.files)):
            target.write(entry.path, path.read_bytes(), what=f"store file {entry.path}")
            if _AFTER_UPLOAD is not None:
                _AFTER_UPLOAD(i, entry.path)
        target.write(MANIFEST, manifest.to_bytes(), what="the manifest")  # last: the store is now visible
    entry = _catalog_entry(manifest, attrs)
    reg.update_json(INDEX, lambda old: _merge_index(old, manifest.key, entry, reg.url),
                    lambda cur: _holds(cur, manifest.key, manifest.name))
    return PushResult(url=target.url, name=manifest.name, key=manifest.key, content=manifest.content,
                      digest=manifest.digest, files=len(manifest.files), n_bytes=manifest.n_bytes,
                      uploaded=uploaded, seconds=time.perf_counter() - t0)


def _catalog_entry(m: Manifest, attrs: dict) -> dict:
    ds = attrs.get("dataset") if isinstance(attrs.get("dataset"), dict) else {}
    params = attrs.get("params") if isinstance(attrs.get("params"), dict) else {}
    return {
        "name": m.name,
        "digest": m.digest,
        "content": m.content,
        "method": attrs.get("method"),
        "solver": params.get("solver"),
        "kernel": params.get("kernel"),
        "dataset": ds.get("name"),
        "split": ds.get("split"),
        "n_samples": ds.get("n_samples"),
        "k": attrs.get("k"),
        "epochs": attrs.get("n_epochs"),
        "n_batches": attrs.get("n_batches"),
        "files": len(m.files),
        "bytes": m.n_bytes,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "schedgen_version": attrs.get("schedgen_version"),
    }


#: Catalog keys as :func:`~._manifest.catalog_key` makes them.
_INDEX_KEY = re.compile(r"(attrs-)?[0-9a-f]{16}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TEXT = (str,)
_INT = (int,)
#: The fields of a catalog entry: (types allowed, required). ``None`` is allowed where
#: the store may lack the attribute. Other fields are kept (a newer schedgen may add
#: some) but never override what :func:`list_registry` sets (path, key, verified, error).
_ENTRY_FIELDS = {
    "name": (_TEXT, True), "digest": (_TEXT, True), "content": (_TEXT, True), "method": (_TEXT, True),
    "k": (_INT, True), "epochs": (_INT, True), "n_batches": (_INT, True),
    "dataset": (_TEXT, False), "split": (_TEXT, False), "solver": (_TEXT, False), "kernel": (_TEXT, False),
    "n_samples": (_INT, False), "files": (_INT, False), "bytes": (_INT, False), "created": (_TEXT, False),
    "schedgen_version": (_TEXT, False), "replaces": (_TEXT, False),
}
#: Row fields list_registry sets itself: a catalog entry's own are dropped.
_ROW_FIELDS = ("path", "key", "verified", "error")


def _check_entry(key: str, e, where: str) -> None:
    """StoreError (one line) unless ``e`` is a well-formed catalog entry for ``key``."""
    head = f"{where}/{INDEX}: catalog entry {key[:40]!r}"
    if not _INDEX_KEY.fullmatch(key):
        raise StoreError(f"{head}: the key must be 16 hex digits (or attrs- and 16 hex digits)")
    if not isinstance(e, dict):
        raise StoreError(f"{head} must be an object, got {type(e).__name__}")
    for field, (types, required) in _ENTRY_FIELDS.items():
        v = e.get(field)
        if v is None:
            if required:
                raise StoreError(f"{head} lacks {field!r}; expected {', '.join(f for f, (_, r) in _ENTRY_FIELDS.items() if r)}")
            continue
        if not isinstance(v, types) or isinstance(v, bool) or (isinstance(v, str) and len(v) > 400):
            raise StoreError(f"{head}: {field!r} must be {'an integer' if types is _INT else 'a short string'}, got {str(v)[:80]!r}")
        if types is _INT and v < 0:
            raise StoreError(f"{head}: {field!r} must be >= 0, got {v}")
    for field in ("digest", "content"):
        if not _HEX64.fullmatch(e[field]):
            raise StoreError(f"{head}: {field!r} must be 64 lowercase hex digits, got {e[field][:80]!r}")
    # The name is joined to the registry root: only a content-addressed NAME.zarr (no
    # '/', no '..') that carries the entry's content digest.
    for field in ("name", "replaces"):
        if field in e and e[field] is not None and not STORE_NAME.fullmatch(e[field]):
            raise StoreError(f"{head}: {field!r} must be a store name NAME-<32 hex>.zarr, got {e[field][:80]!r}")
    if not e["name"].endswith(f"-{e['content'][:32]}.zarr"):
        raise StoreError(f"{head}: name {e['name'][:80]} does not carry its content digest {e['content'][:32]}")


def _parse_index(data: bytes | None, where: str) -> dict:
    if data is None:
        return {"format": INDEX_FORMAT, "entries": {}}
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise StoreError(f"{where}/{INDEX}: the catalog is not JSON; expected a {INDEX_FORMAT} document") from None
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT or not isinstance(doc.get("entries"), dict):
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise StoreError(f"{where}/{INDEX}: catalog format must be {INDEX_FORMAT!r} with 'entries', got {str(got)[:80]!r}")
    for key, e in doc["entries"].items():
        _check_entry(key, e, where)
    return doc


def _merge_index(old: bytes | None, key: str, entry: dict, where: str) -> bytes:
    doc = _parse_index(old, where)
    prev = doc["entries"].get(key)
    if prev is not None and prev.get("name") != entry["name"]:
        # Same inputs, other bytes (another schedgen, another device): the newest push wins
        # the key; the older store stays in the registry under its own name.
        entry = {**entry, "replaces": prev["name"]}
    doc["entries"][key] = entry
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _holds(data: bytes, key: str, name: str) -> bool:
    try:
        return json.loads(data)["entries"][key]["name"] == name
    except (ValueError, KeyError, TypeError):
        return False


# --------------------------------------------------------------------------- pull / fetch


def _read_manifest(loc: Location, *, missing_ok: bool = False, denied_is_missing: bool = False) -> Manifest | None:
    from . import _manifest  # the limit read at call time (a test lowers it)

    data = loc.read(MANIFEST, what="the manifest", limit=_manifest.MAX_MANIFEST_BYTES,
                    denied_is_missing=denied_is_missing)
    if data is None:
        if missing_ok:
            return None
        raise StoreError(
            f"no registry manifest at {loc.url}/{MANIFEST}: expected a store pushed with schedgen push "
            "(a store without its manifest is incomplete or not in a registry)"
        )
    m = Manifest.from_bytes(data, f"{loc.url}/{MANIFEST}")
    if m.name != loc.name:
        raise StoreError(f"{loc.url}/{MANIFEST}: the manifest is that of {m.name}, not of {loc.name}")
    return m


def _store_location(url: str, storage_options, timeout) -> Location:
    loc = resolve(url, storage_options, timeout=timeout)
    if not loc.name.endswith(".zarr"):
        raise ParameterError(
            f"bad store URL {loc.url}: expected a registry root followed by a store name ending in .zarr "
            "(schedgen list REGISTRY shows the names)"
        )
    return loc


def _read_checked(loc: Location, f) -> bytes:
    """The bytes of the store file ``f``, checked against its manifest entry. A file the
    backend says is larger than the manifest's size is refused before it is read."""
    data = loc.read(f.path, what=f"store file {f.path}", limit=f.size)
    if data is None:
        raise StoreError(f"{loc.url}: file {f.path} listed in the manifest is missing from the registry")
    if len(data) != f.size:
        raise StoreError(f"{loc.url}: file {f.path} is {len(data)} bytes; the manifest says {f.size}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != f.sha256:
        raise StoreError(
            f"{loc.url}: file {f.path} has sha256 {actual[:16]}...; the manifest says {f.sha256[:16]}... "
            "(modified or corrupt)"
        )
    return data


def _check_digest(loc: Location, m: Manifest, path: Path) -> None:
    s = read_schedule(path, verify=True)
    if s.digest != m.digest:
        raise StoreError(f"{loc.url}: the store's digest {s.digest[:16]}... is not the manifest's {m.digest[:16]}...")


def _download_verified(loc: Location, m: Manifest, dest: Path) -> int:
    """Download every file of ``m`` into ``dest`` (a fresh folder), each checked against
    the manifest, then the store's own digests; returns the bytes downloaded."""
    dest.mkdir(parents=True)
    total = 0
    for f in m.files:
        data = _read_checked(loc, f)
        out = dest / f.path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        total += len(data)
    _check_digest(loc, m, dest)
    (dest / MANIFEST).write_bytes(m.to_bytes())
    return total


def _verify_in_place(loc: Location, m: Manifest) -> None:
    """Check a store of a local registry where it is (nothing copied): every file against
    the manifest, no file the manifest does not list, then the store's own digests.
    (A file rewritten between these reads and the digest check is seen by the next check.)"""
    for f in m.files:
        _read_checked(loc, f)
    listed = {f.path for f in m.files} | {MANIFEST}
    root = Path(loc.root)
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            rel = (Path(dirpath) / fn).relative_to(root).as_posix()
            if rel not in listed:
                raise StoreError(f"{loc.url}: file {rel} is not in the manifest (added after the push)")
    _check_digest(loc, m, root)


def _same_manifest(path: Path, m: Manifest) -> bool:
    try:
        return Manifest.from_bytes((path / MANIFEST).read_bytes(), str(path)).content == m.content
    except (OSError, StoreError):
        return False


def _place(loc: Location, m: Manifest, final: Path) -> tuple[int, bool]:
    """Download and verify into a hidden sibling of ``final``, then rename it in (nothing
    half-written ever has the final name). Returns (bytes, whether downloaded)."""
    if final.exists():
        if _same_manifest(final, m):
            return 0, False
        raise StoreError(f"{final} already exists and is not {m.name} as pushed; expected a new path or that store")
    tmp = temporary_sibling(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        n = _download_verified(loc, m, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if _same_manifest(final, m):  # another process placed the same content first
                return n, False
            raise
        return n, True
    except OSError as exc:
        raise StoreError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pull(url: str, directory: str | os.PathLike = "schedules", *, storage_options: dict | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> PullResult:
    """Download a store from a registry into ``directory``, verified.

    Every file is checked against the manifest (size, sha256), then the store against
    its own digests (:func:`~schedgen.store.read_schedule`); only then is it renamed to
    ``<directory>/<name>``, with its manifest inside.

    Parameters
    ----------
    url : str
        ``<registry root>/<name>`` (s3://, gs://, http(s)://, file:// or a local path).
    directory : str or os.PathLike, default "schedules"
        The local folder to put the store in.
    storage_options : dict, optional
    timeout : float

    Returns
    -------
    PullResult

    Raises
    ------
    StoreError
        No manifest, a file that differs from it (named), a store that fails its
        digests, an unreachable endpoint, or a different store already at the destination.
    """
    t0 = time.perf_counter()
    loc = _store_location(url, storage_options, timeout)
    m = _read_manifest(loc)
    final = Path(directory) / m.name
    n, downloaded = _place(loc, m, final)
    return PullResult(path=str(final), name=m.name, content=m.content, digest=m.digest, files=len(m.files),
                      n_bytes=n, downloaded=downloaded, seconds=time.perf_counter() - t0)


def fetch(url: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
          storage_options: dict | None = None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """The local, verified copy of the registry store at ``url`` (for replay).

    Reads the store's manifest (one small request), and returns the cached copy
    ``<cache_dir>/<name>`` when it holds that content; else downloads the store,
    verifies every file against the manifest and the store against its digests, and
    renames it into the cache. Concurrent callers (ranks of one job) each download
    and the first rename wins; the others use it.

    Parameters
    ----------
    url : str or os.PathLike
        A registry store URL, ``<root>/<name>``. A local path without ``file://`` is
        returned unchanged (nothing to fetch).
    cache_dir : str or os.PathLike, optional
        Default :func:`default_cache_dir`.
    storage_options : dict, optional
    timeout : float

    Returns
    -------
    Path
        A local store to pass to :func:`~schedgen.store.read_schedule`.

    Raises
    ------
    StoreError
        As :func:`pull`.
    """
    s = os.fspath(url)
    if isinstance(s, str) and "://" not in s:
        return Path(s)
    loc = _store_location(s, storage_options, timeout)
    m = _read_manifest(loc)
    final = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / m.name
    _place(loc, m, final)
    return final


# --------------------------------------------------------------------------- catalog


def read_index(url: str, *, storage_options: dict | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """The catalog of the registry at ``url``: ``{"format", "entries": {key: entry}}``."""
    reg = resolve(url, storage_options, timeout=timeout)
    data = reg.read(INDEX, what="the catalog", limit=MAX_INDEX_BYTES)
    if data is None:
        raise StoreError(f"no registry catalog at {reg.url}/{INDEX}: expected a registry root that schedgen push wrote to")
    return _parse_index(data, reg.url)


def list_registry(url: str, *, verify: bool = False, storage_options: dict | None = None,
                  timeout: float = DEFAULT_TIMEOUT, cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per catalog entry of the registry at ``url`` (sorted by name).

    A row is the catalog entry plus ``path`` (the store's URL) and ``key``; a row whose
    store has no manifest (deleted, or never completed) has ``error``. Without
    ``verify`` the row says what the catalog says, nothing checked. With ``verify`` each
    store is checked: every file against its manifest (size, sha256), then the store
    against its own digests, then the catalog entry against both (name, content and
    digest against the manifest; method, k, epochs, dataset, ... against the store's
    attributes); a remote store is fetched into ``cache_dir`` (:func:`fetch`), a local or
    ``file://`` one checked where it is. Every row then has ``verified``: True, or
    False with ``error``. ``verified`` and ``error`` come from these checks only (a
    catalog entry's own are ignored).
    """
    reg = resolve(url, storage_options, timeout=timeout)
    doc = read_index(url, storage_options=storage_options, timeout=timeout)
    rows = []
    for key, e in sorted(doc["entries"].items(), key=lambda kv: (kv[1]["name"], kv[0])):
        entry = {k: v for k, v in e.items() if k not in _ROW_FIELDS}
        row = {**entry, "path": f"{reg.url}/{e['name']}", "key": key}
        store = reg.child(e["name"])
        error = None
        try:
            if not verify:
                if not store.exists(MANIFEST, what="the manifest"):
                    error = f"{store.url} has no {MANIFEST}: the store is incomplete or was removed"
            else:
                error = _verify_entry(store, entry, cache_dir)
        except StoreError as exc:
            error = str(exc)
        if error is not None:
            row["error"] = error
        if verify:
            row["verified"] = error is None
        rows.append(row)
    return rows


def _verify_entry(store: Location, e: dict, cache_dir) -> str | None:
    """Why the catalog entry ``e`` and its store at ``store`` do not check out (None when
    they do); StoreError from the store's own checks."""
    m = _read_manifest(store, missing_ok=True)
    if m is None:
        return f"{store.url} has no {MANIFEST}: the store is incomplete or was removed"
    if store.local:
        _verify_in_place(store, m)
        path = Path(store.root)
    else:
        path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / m.name
        _place(store, m, path)
    expected = _catalog_entry(m, read_attrs(path))
    for field in ("name", "content", "digest", *(f for f in expected if f not in ("name", "content", "digest"))):
        if field == "created" or e.get(field) == expected[field]:
            continue
        return (f"{store.url}: the catalog says {field}={str(e.get(field))[:80]!r}, the verified store says "
                f"{str(expected[field])[:80]!r} (the catalog entry was modified)")
    return None


def is_registry(url: str | os.PathLike, *, storage_options: dict | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether ``url`` is a registry root (holds ``index.json``).

    Reads the catalog rather than asking whether it exists: fsspec's http ``exists``
    answers False for an unreachable server, which would read as "no catalog"."""
    reg = resolve(url, storage_options, timeout=timeout)
    return reg.read(INDEX, what="the catalog", limit=MAX_INDEX_BYTES) is not None


def registry_store(url: str, *, storage_options: dict | None = None,
                   timeout: float = DEFAULT_TIMEOUT) -> Manifest | None:
    """The manifest of the store at ``url`` when it is a registry store, else None.

    Access refused on ``manifest.json`` counts as "not a registry store": on S3 a client
    without ``s3:ListBucket`` gets 403, not 404, for a missing key, and a plain store
    such a client can read must stay readable (the store's own reads then say whether
    access is refused). A registry store whose manifest alone is refused is read as a
    plain store: still checked against its own digests, not against a manifest.
    """
    loc = resolve(url, storage_options, timeout=timeout)
    if not loc.name.endswith(".zarr"):
        return None
    return _read_manifest(loc, missing_ok=True, denied_is_missing=True)
