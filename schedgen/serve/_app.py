"""The HTTP application: the catalog and the store files of a registry folder, read-only,
and build jobs behind a bearer token (see the package docstring for the security model)."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import stat
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from ..build import BuildConfig, check_options
from ..catalog import list_schedules
from ..data import DATASETS
from ..errors import ParameterError, SchedgenError
from ..params import check_int
from ..registry import INDEX
from ._jobs import BuildPool, PoolClosed, QueueFull

#: Request bodies above this many bytes are refused (413).
MAX_BODY = 64 * 1024

#: The build options a client may set (BuildConfig's fields that shape a schedule). Where
#: the data is read, where stores go, --force, --download, the device and the lock
#: timeout are the server's.
CLIENT_OPTIONS = ("dataset", "split", "k", "method", "seed", "epochs", "solver", "kernel", "bandwidth", "degree",
                  "coef0", "paper_coefficients", "pca", "standardize", "mixing_rate", "groups",
                  "batches_per_epoch", "submodular_normalize", "approx", "pair", "partner_size")

#: The folder under the root where builds keep their own stores (their cache); a dot
#: name, so never served.
BUILD_DIR = ".schedgen-builds"

#: One path segment a store file may have: what schedgen and the registry write. No dot
#: first (no ``.``/``..``, no hidden files such as the builds' folder or lock files).
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_JOB_ID = re.compile(r"[0-9a-f]{16}")
_MAX_DEPTH = 8


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _not_found() -> JSONResponse:
    return _error(404, "not found")


def create_app(root, *, token: str | None = None, data_dir=None, workers: int = 1, queue: int = 8,
               max_body: int = MAX_BODY) -> Starlette:
    """The ASGI application serving the registry folder ``root``.

    Parameters
    ----------
    root : str or os.PathLike
        An existing folder: a registry (``index.json`` and stores with ``manifest.json``, as
        ``schedgen push`` writes) or a folder of stores. Builds are pushed into it as a
        registry; their own cache is ``<root>/.schedgen-builds`` (not served).
    token : str, optional
        The bearer token builds need. None: builds are disabled (403).
    data_dir : str or os.PathLike, optional
        The folder the builds' datasets are read from (nothing is downloaded). Clients name a
        dataset (:data:`schedgen.data.DATASETS`), never a path.
    workers : int, default 1
        Builds running at once, each in its own process.
    queue : int, default 8
        Builds waiting beyond those; a request beyond is refused with 429.
    max_body : int, default 65536
        Largest request body, in bytes (413 above).

    Raises
    ------
    ParameterError
        ``root`` is not a folder, an empty token, a bad number.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ParameterError(f"--root must be an existing folder (the registry to serve), got {str(root)[:200]!r}")
    real_root = Path(os.path.realpath(root_path))
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ParameterError("the bearer token must be a non-empty string")
    if token is not None:
        token = token.strip()  # the header's value is compared stripped: so is the token
    workers = check_int("workers", workers, minimum=1, maximum=256)
    queue = check_int("queue", queue, minimum=0, maximum=100_000)
    max_body = check_int("max body", max_body, minimum=1)
    data = None if data_dir is None else str(Path(data_dir).expanduser().absolute())
    # Without --data-dir, builds read the default data folder: scrub that path from messages too.
    from ..data import default_data_dir

    data_shown = data if data is not None else str(Path(default_data_dir()).expanduser().absolute())

    def scrub(msg: str) -> str:
        """A message without the server's own paths."""
        for p, label in ((str(real_root / BUILD_DIR), "<builds>"), (str(real_root), "<root>"),
                         (str(root_path.absolute()), "<root>"), (data_shown, "<data-dir>")):
            if p:
                msg = msg.replace(p, label)
        return msg

    pool = BuildPool(real_root, real_root / BUILD_DIR, data, workers, queue, scrub)

    def authorize(request: Request) -> JSONResponse | None:
        if token is None:
            return _error(403, "builds are disabled on this server (started without --token-file)")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _error(401, "expected the header Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": 'Bearer realm="schedgen"'})
        return None

    async def catalog(request: Request) -> JSONResponse:
        try:
            rows = await run_in_threadpool(list_schedules, real_root)
        except SchedgenError as exc:
            return _error(500, scrub(str(exc)))
        base = str(request.url_for("store_file", rest="")).rstrip("/")
        out = []
        for r in rows:
            name = Path(str(r.pop("path"))).name
            r.pop("replaces", None)
            if "error" in r:
                r["error"] = scrub(r["error"])
            out.append({"name": name, "url": f"{base}/{name}", **r})
        return JSONResponse({"root": "schedules", "stores": out})

    async def store_file(request: Request):
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        # No store file needs percent-encoding or a backslash: refusing them outright
        # leaves nothing (%2e%2e, %2f, \..\) for a decoding step to turn into traversal.
        if b"%" in raw or b"\\" in raw:
            return _not_found()
        parts = request.path_params["rest"].split("/")
        if not 0 < len(parts) <= _MAX_DEPTH or not all(_SEGMENT.fullmatch(p) for p in parts):
            return _not_found()
        if not (parts[0].endswith(".zarr") or parts == [INDEX]):
            return _not_found()
        real = os.path.realpath(real_root.joinpath(*parts))
        if not real.startswith(str(real_root) + os.sep):  # a symlink out of the root
            return _not_found()
        try:
            st = os.stat(real)
        except OSError:
            return _not_found()
        if not stat.S_ISREG(st.st_mode):  # no folder listing, no FIFO, no device
            return _not_found()
        # A pushed store's name is content-addressed: its files never change.
        cache = "no-cache" if parts == [INDEX] else "public, max-age=31536000, immutable"
        return FileResponse(real, stat_result=st, headers={"Cache-Control": cache},
                            media_type="application/json" if parts[-1].endswith(".json") else "application/octet-stream",
                            content_disposition_type="inline")

    async def post_build(request: Request) -> JSONResponse:
        denied = authorize(request)
        if denied is not None:
            return denied
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return _error(413 if length.isdigit() else 400, f"the request body must be at most {max_body} bytes")
        body = bytearray()
        async for chunk in request.stream():  # a chunked body has no Content-Length
            body += chunk
            if len(body) > max_body:
                return _error(413, f"the request body must be at most {max_body} bytes")
        try:
            options = parse_options(bytes(body))
        except SchedgenError as exc:
            return _error(400, str(exc))
        try:
            status, _ = pool.submit(options)
        except QueueFull:
            return _error(429, f"the build queue is full ({pool.workers} running, {pool.queue} waiting); "
                               "retry later", headers={"Retry-After": "5"})
        except PoolClosed:
            return _error(503, "the server is stopping")
        url = str(request.url_for("build_status", jid=status["id"]))
        return JSONResponse(_with_urls(request, status, url), status_code=202, headers={"Location": url})

    async def build_status(request: Request) -> JSONResponse:
        denied = authorize(request)
        if denied is not None:
            return denied
        jid = request.path_params["jid"]
        status = pool.status(jid) if _JOB_ID.fullmatch(jid) else None
        if status is None:
            return _not_found()
        return JSONResponse(_with_urls(request, status, str(request.url)))

    async def builds(request: Request) -> JSONResponse:
        denied = authorize(request)
        return denied if denied is not None else JSONResponse(pool.stats())

    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(pool.shutdown)  # may wait a moment for a worker to announce its job

    def _with_urls(request: Request, status: dict, url: str) -> dict:
        out = {**status, "status_url": url}
        if status.get("store"):
            out["url"] = str(request.url_for("store_file", rest=status["store"]))
        return out

    app = Starlette(
        routes=[
            Route("/schedules", catalog, methods=["GET"]),
            Route("/schedules/{rest:path}", store_file, methods=["GET"], name="store_file"),
            Route("/builds", post_build, methods=["POST"]),
            Route("/builds", builds, methods=["GET"]),
            Route("/builds/{jid}", build_status, methods=["GET"], name="build_status"),
        ],
        exception_handlers={HTTPException: not_found},
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.root = real_root
    return app


def _dataset_name(value) -> str:
    """A dataset the server holds, by name: never a path (``npz:``, ``array:``, ``/``, ``..``)."""
    if isinstance(value, str):
        name = value.strip().lower().replace("_", "-")
        if name in DATASETS:
            return name
    shown = repr(value)[:80]
    raise ParameterError(f"dataset must be one of {', '.join(DATASETS)} (a name the server holds; no file paths, "
                         f"npz: or array:), got {shown}")


def parse_options(body: bytes) -> dict:
    """The normalised client options of a build request body (a JSON object).

    Every :data:`CLIENT_OPTIONS` key, checked by :class:`~schedgen.build.BuildConfig` and
    :func:`~schedgen.build.check_options`, at its value (defaults filled in), so that
    identical requests have identical options whatever they spelled out.

    Raises
    ------
    ParameterError
        Not a JSON object, an unknown option, a dataset that is not a server dataset's
        name, or any option BuildConfig refuses (its one-line message).
    """
    try:
        doc = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        raise ParameterError("the request body must be a JSON object of build options, got invalid JSON") from None
    if not isinstance(doc, dict):
        raise ParameterError(f"the request body must be a JSON object of build options, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(CLIENT_OPTIONS))
    if unknown:
        raise ParameterError(f"unknown build option {unknown[0][:60]!r}; expected some of {', '.join(CLIENT_OPTIONS)}")
    if "dataset" in doc:
        doc["dataset"] = _dataset_name(doc["dataset"])
    try:
        config = BuildConfig.from_text(**doc)
        check_options(config)
    except SchedgenError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. a list where a name is expected
        raise ParameterError(f"bad build options: {' '.join(str(exc).split())[:200]}") from None
    return {name: getattr(config, name) for name in CLIENT_OPTIONS}
