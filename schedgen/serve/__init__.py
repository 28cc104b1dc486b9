"""``schedgen serve``: the precompute service over HTTP (Starlette under uvicorn).

Routes::

    GET  /schedules                the catalog of the root (``schedgen list`` of it, as JSON)
    GET  /schedules/<name>/<path>  a store's files, read-only; ``/schedules/index.json`` the
                                   registry catalog, so ScheduleBatchSampler(
                                   "http://host:port/schedules/<name>") replays a store verified
    POST /builds                   build options as JSON -> 202, {"id", "state", "status_url"}
    GET  /builds/<id>              state (queued, running, done, failed, cancelled), progress
                                   {stage, done, total}; when done the store's name and URL
    GET  /builds                   counts (accepted, deduplicated, computed, cache hits, ...)

Layout: the root is a registry (:mod:`schedgen.registry`); a build runs into
``<root>/.schedgen-builds`` (its cache, never served) and is published with
:func:`schedgen.registry.push`, so every store served from a build has a manifest and
the sampler's verified fetch applies end to end.

Security model: reads are open, builds need ``Authorization: Bearer <token>`` (the
``--token-file``'s line, compared in constant time; without a token file builds are
refused, 403); clients name a dataset the server holds, never a path; request bodies
are at most 64 KiB (413) and the queue is bounded (429); a store path with ``..``,
percent-encoding, a backslash, a dot file, or a symlink out of the root is 404; no
folder is listed; it binds to 127.0.0.1 unless ``--host`` says otherwise; there is no
TLS (put a reverse proxy in front to serve beyond one machine).

Builds run in worker processes (:mod:`._jobs` says why, and how identical requests
are one job).
"""

import importlib.util as _util

from ..errors import ParameterError as _ParameterError

# Checked before anything imports them, so that a missing extra is one line with the hint.
_missing = [m for m in ("starlette", "uvicorn") if _util.find_spec(m) is None]
if _missing:
    raise _ParameterError(
        f"schedgen serve needs {' and '.join(_missing)}, which {'is' if len(_missing) == 1 else 'are'} "
        "not installed; install them with pip install 'schedgen[serve]'"
    )

from ._app import CLIENT_OPTIONS, MAX_BODY, create_app, parse_options  # noqa: E402
from ._run import bind, read_token, serve  # noqa: E402

__all__ = ["create_app", "serve", "read_token", "bind", "parse_options", "CLIENT_OPTIONS", "MAX_BODY"]
