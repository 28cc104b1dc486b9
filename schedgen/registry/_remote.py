"""Where a registry lives: an fsspec filesystem and a root in it, bounded timeouts, one-line
errors, and the conditional read-modify-write of a JSON document (the catalog).

Conditional writes, as each backend offers them (checked in their sources, s3fs 2026.9,
moto 5.2, botocore 1.43):

* ``s3://``: ``PutObject`` with ``If-None-Match: *`` (create only) or ``If-Match: <ETag>``.
  s3fs passes extra keyword arguments of ``_call_s3`` straight to botocore, so the put
  is ``fs._call_s3("put_object", ..., IfMatch=etag)``; the body and its ETag come from
  one ``GetObject`` (two requests could pair a body with a later ETag). A lost race is
  HTTP 412 ``PreconditionFailed`` (or 409 ``ConditionalRequestConflict`` on AWS), which
  s3fs turns into ``OSError``/``FileExistsError`` with the botocore error as cause.
  moto's server checks the precondition and stores the object in one request handler
  but without a lock, so two racing requests can both pass there: after each write the
  catalog is read back and the merge redone if the entry is missing.

  **What the no-lost-entry guarantee rests on**: the backend's precondition check being
  atomic with the write. Amazon S3 documents it so (of two conditional PUTs on one ETag,
  one succeeds and the other gets 412/409), and then no catalog entry is ever lost. On a
  backend whose check is not atomic (moto, some S3-compatible servers) the read-back
  narrows the window but cannot close it: a concurrent writer may overwrite the catalog
  after our read-back, dropping our entry (``schedgen push`` again restores it: the store
  itself is intact). The two-process S3 test against moto therefore exercises the retry
  logic, not atomicity; the ``file://`` variant, under ``flock``, is atomic.
* local paths and ``file://``: an ``fcntl.flock`` on ``.index.json.lock`` around the read,
  the merge and an atomic temp-then-rename write.
* ``http(s)://``: read-only. Other protocols (``gs://``, ...) can be read and pulled from,
  but a push is refused before anything is uploaded: without a conditional write two
  pushes at once could lose a catalog entry.

Credentials are never handled here: they come from the storage options or the usual
fsspec/boto configuration and are never written anywhere.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from .._proc import atomic_write
from ..errors import ParameterError, StoreError

#: Seconds to wait for a connection and for each response (an unreachable endpoint fails
#: within a few multiples of this, never hangs).
DEFAULT_TIMEOUT = 20.0

_LOCAL = ("local", "file")
_S3 = ("s3", "s3a")
_HTTP = ("http", "https")
_PROTOCOL = re.compile(r"[a-z][a-z0-9+.-]*")


#: ``scheme://user:password@`` in free text (an exception message quoting a URL).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, at most ``limit`` characters, without any
    ``user:password@`` of a URL the message quotes."""
    msg = _USERINFO.sub(r"\1", " ".join(str(exc).split())) or type(exc).__name__
    text = msg if msg.startswith(type(exc).__name__) else f"{type(exc).__name__}: {msg}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part (for messages and the catalog)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass
class Location:
    """A folder of a registry: ``fs`` (an fsspec filesystem), ``root`` (its path in ``fs``,
    no trailing slash) and ``url`` (for messages, credentials removed)."""

    fs: Any
    root: str
    url: str
    protocol: str

    @property
    def local(self) -> bool:
        return self.protocol in _LOCAL

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def child(self, name: str) -> "Location":
        return Location(self.fs, self.path(name), f"{self.url.rstrip('/')}/{name}", self.protocol)

    def parent(self) -> "Location":
        root, url = self.root.rsplit("/", 1)[0], self.url.rstrip("/").rsplit("/", 1)[0]
        return Location(self.fs, root, url, self.protocol)

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    # ------------------------------------------------------------------ reads

    def read(self, rel: str, *, what: str, limit: int | None = None, denied_is_missing: bool = False) -> bytes | None:
        """The bytes of ``rel`` (None when it does not exist), or StoreError naming ``what``.

        With ``limit``, a file the backend says is larger is refused before it is read
        (a backend that reports no size, e.g. http without Content-Length, is read and
        the caller checks the length). With ``denied_is_missing``, access refused counts
        as absent (see :func:`access_denied`).
        """
        where = self.path(rel)
        try:
            if limit is not None:
                try:
                    size = self.fs.size(where)
                except FileNotFoundError:
                    # fsspec's http info() says "not found" for any failure (a refused
                    # connection too): the read below tells which.
                    size = None
                if size is not None and size > limit:
                    raise StoreError(f"{what} at {self.url}/{rel} is {size} bytes; expected at most {limit}")
            return self.fs.cat_file(where)
        except FileNotFoundError:
            return None
        except StoreError:
            raise
        except Exception as exc:
            if denied_is_missing and access_denied(exc):
                return None
            raise self.unreachable(f"cannot read {what} at {self.url}/{rel}", exc) from None

    def exists(self, rel: str, *, what: str) -> bool:
        try:
            return bool(self.fs.exists(self.path(rel)))
        except Exception as exc:
            raise self.unreachable(f"cannot look for {what} at {self.url}/{rel}", exc) from None

    def unreachable(self, head: str, exc: BaseException) -> StoreError:
        return StoreError(f"{head}: {one_line(exc)} (endpoint unreachable, access refused or timed out)")

    # ------------------------------------------------------------------ writes

    def write(self, rel: str, data: bytes, *, what: str) -> None:
        """Write ``rel`` whole (local: temp then rename; S3: one PUT, atomic by itself)."""
        where = self.path(rel)
        try:
            if self.local:
                atomic_write(Path(where), lambda tmp: tmp.write_bytes(data))
            else:
                self.fs.pipe_file(where, data)
        except Exception as exc:
            raise self.unreachable(f"cannot write {what} to {self.url}/{rel}", exc) from None

    def update_json(self, rel: str, merge: Callable[[bytes | None], bytes], done: Callable[[bytes], bool],
                    *, attempts: int = 12) -> bytes:
        """Read ``rel``, write ``merge(old)`` conditionally, retry on a lost race.

        ``done(current)`` says whether the current bytes already hold the change (checked
        after each write: a server whose precondition check is not atomic may have let a
        concurrent writer overwrite it). Returns the bytes written.
        """
        if self.local:
            return self._update_local(rel, merge)
        if self.protocol not in _S3:
            raise require_conditional(self)
        for attempt in range(attempts):
            old, etag = self._get_with_etag(rel)
            if old is not None and done(old):
                return old
            new = merge(old)
            if self._put_if(rel, new, etag):
                current, _ = self._get_with_etag(rel)
                if current is not None and done(current):
                    return new
            # Lost the race: back off (jittered, so two writers do not collide again).
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        raise StoreError(
            f"cannot update {self.url}/{rel}: {attempts} conditional writes in a row lost a race "
            "with other writers; expected one to succeed (try again)"
        )

    def _update_local(self, rel: str, merge: Callable[[bytes | None], bytes]) -> bytes:
        import fcntl

        target = Path(self.path(rel))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target.parent / f".{target.name}.lock", "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    old = target.read_bytes() if target.exists() else None
                    new = merge(old)
                    atomic_write(target, lambda tmp: tmp.write_bytes(new))
                    return new
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            raise StoreError(f"cannot update {self.url}/{rel}: {exc.strerror or exc}") from None

    def _bucket_key(self, rel: str) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(self.path(rel))
        return bucket, key

    def _get_with_etag(self, rel: str) -> tuple[bytes | None, str | None]:
        from fsspec.asyn import sync

        bucket, key = self._bucket_key(rel)

        async def get():
            try:
                r = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None, None
            body = r["Body"]
            try:
                data = await body.read()
            finally:
                body.close()
            return data, r["ETag"]

        try:
            return sync(self.fs.loop, get)
        except Exception as exc:
            raise self.unreachable(f"cannot read {self.url}/{rel}", exc) from None

    def _put_if(self, rel: str, data: bytes, etag: str | None) -> bool:
        """PUT ``data`` if ``rel`` still has ``etag`` (absent when None); False on a lost race."""
        bucket, key = self._bucket_key(rel)
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
        except Exception as exc:
            if _lost_race(exc):
                return False
            raise self.unreachable(f"cannot write {self.url}/{rel}", exc) from None
        finally:
            self.fs.invalidate_cache(self.path(rel))
        return True


def _lost_race(exc: BaseException) -> bool:
    """Whether ``exc`` (from s3fs, its cause from botocore) is a failed precondition."""
    if isinstance(exc, FileExistsError):
        return True
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or status in (412, 409):
                return True
    return False


def access_denied(exc: BaseException) -> bool:
    """Whether ``exc`` is access refused: ``PermissionError`` (s3fs's translation of 403
    ``AccessDenied``), or a botocore/aiohttp error carrying 403 / ``AccessDenied``.

    On S3, a GET or HEAD of a missing key by a client without ``s3:ListBucket`` is 403,
    not 404: "denied" then often just means "not there"."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is None:
            continue
        if isinstance(e, PermissionError) or getattr(e, "status", None) == 403:
            return True
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("AccessDenied", "403") or status == 403:
                return True
    return False


def require_conditional(loc: Location) -> ParameterError:
    if loc.protocol in _HTTP:
        return ParameterError(
            f"cannot push to {loc.url}: http(s) registries are read-only; expected s3://, file:// or a "
            "local path (serve a file:// registry over http to share it read-only)"
        )
    return ParameterError(
        f"cannot push to {loc.url}: the catalog needs conditional writes, which schedgen does "
        f"on s3://, file:// and local paths; got {loc.protocol}://"
    )


def resolve(url: str | os.PathLike, storage_options: dict | None = None, *,
            timeout: float = DEFAULT_TIMEOUT, write: bool = False) -> Location:
    """The :class:`Location` of a registry URL or local path.

    Parameters
    ----------
    url : str or os.PathLike
        ``s3://bucket/prefix``, ``gs://...``, ``http(s)://host/path``, ``file:///path`` or a
        local path.
    storage_options : dict, optional
        Passed to the fsspec filesystem (e.g. ``endpoint_url``, ``key``/``secret``);
        without them fsspec/boto read their usual configuration (environment, files).
    timeout : float
        Seconds for a connection and for each response.
    write : bool, default False
        The caller will push: a protocol without conditional writes here is refused
        before any filesystem is made.

    Raises
    ------
    ParameterError
        A malformed URL, an unknown protocol, a missing fsspec implementation, or (with
        ``write``) a read-only protocol.
    """
    s = os.fspath(url)
    if not isinstance(s, str) or not s.strip() or any(ord(c) < 32 for c in s):
        raise ParameterError(f"bad registry URL {s!r}: expected s3://, gs://, http(s)://, file:// or a local path")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
        raise ParameterError(f"timeout must be a number of seconds in (0, 3600], got {timeout!r}")
    opts = dict(storage_options or {})
    if "://" not in s or s.startswith("file://"):
        path = s[len("file://"):] if s.startswith("file://") else s
        if not path:
            raise ParameterError(f"bad registry URL {s!r}: expected a path after file://")
        from fsspec.implementations.local import LocalFileSystem

        root = str(Path(path).expanduser().absolute()).rstrip("/") or "/"
        return Location(LocalFileSystem(), root, s.rstrip("/") or s, "file" if s.startswith("file://") else "local")
    protocol = s.split("://", 1)[0].lower()
    rest = s.split("://", 1)[1].strip("/")
    if not _PROTOCOL.fullmatch(protocol) or not rest:
        raise ParameterError(
            f"bad registry URL {display_url(s)!r}: expected PROTOCOL://BUCKET/PATH (s3://, gs://, http(s)://) "
            "or a local path"
        )
    try:
        import fsspec
        from fsspec.registry import known_implementations, registry
    except ImportError:
        raise ParameterError(f"cannot open {display_url(s)}: registries need fsspec; pip install 'schedgen[registry]'") from None
    if protocol not in known_implementations and protocol not in registry:
        raise ParameterError(
            f"bad registry URL {display_url(s)!r}: unknown protocol {protocol!r}; expected s3://, gs://, "
            "http(s)://, file:// or a local path"
        )
    if write and protocol not in _S3:
        raise require_conditional(Location(None, "", display_url(s).rstrip("/"), protocol))
    if protocol in _S3:
        cfg = dict(opts.pop("config_kwargs", {}) or {})
        cfg.setdefault("connect_timeout", timeout)
        cfg.setdefault("read_timeout", timeout)
        cfg.setdefault("retries", {"max_attempts": 2, "mode": "standard"})
        opts["config_kwargs"] = cfg
    elif protocol in _HTTP:
        with contextlib.suppress(ImportError):
            import aiohttp

            ck = dict(opts.pop("client_kwargs", {}) or {})
            ck.setdefault("timeout", aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout))
            opts["client_kwargs"] = ck
    try:
        # A fresh instance: the fsspec instance cache would share our timeouts and
        # retries with the caller's own filesystems.
        fs = fsspec.filesystem(protocol, skip_instance_cache=True, **opts)
    except ImportError as exc:
        raise ParameterError(
            f"cannot open {display_url(s)}: {protocol}:// needs a package ({one_line(exc)})"
            + ("; pip install 'schedgen[registry]'" if protocol in _S3 + _HTTP else "")
        ) from None
    except Exception as exc:
        raise ParameterError(f"cannot open {display_url(s)}: {one_line(exc)}") from None
    if protocol in _S3:
        fs.retries = 2  # s3fs's own retry loop (class default 5) on top of botocore's
    root = fs._strip_protocol(s).rstrip("/") if protocol not in _HTTP else s.rstrip("/")
    return Location(fs, root, display_url(s).rstrip("/"), protocol)
