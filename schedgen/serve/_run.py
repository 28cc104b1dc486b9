"""``schedgen serve``: read the token file, bind the socket, run the app under uvicorn."""

from __future__ import annotations

import os
import socket
import stat
import sys
import warnings
from pathlib import Path

from ..errors import ParameterError, SchedgenWarning
from ..params import parse_int
from ._app import create_app

#: Largest token file read (a token is a line, not a document).
MAX_TOKEN_BYTES = 4096


def read_token(path) -> str:
    """The bearer token in the file ``path``: its one line, surrounding whitespace removed.

    Raises
    ------
    ParameterError
        A missing, unreadable, empty, multi-line or oversized file, or characters an HTTP
        header cannot carry. The message never shows the file's content.
    """
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
            mode = os.fstat(f.fileno()).st_mode
    except OSError as exc:
        raise ParameterError(f"cannot read the token file {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise ParameterError(f"the token file {p} must hold one line of at most {MAX_TOKEN_BYTES} bytes, got more")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = None
    if not token or any(not 33 <= ord(c) < 127 for c in token):
        raise ParameterError(f"the token file {p} must hold one line of printable ASCII without spaces "
                             "(e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(f"the token file {p} is readable by other users; chmod 600 it", SchedgenWarning, stacklevel=2)
    return token


def bind(host: str, port) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port), or a one-line ParameterError."""
    port = parse_int("port", port, minimum=0, maximum=65535)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ParameterError(f"cannot listen on {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    family, _, _, _, addr = infos[0]
    # proto=IPPROTO_TCP, not 0 (socket.create_server's): asyncio sets TCP_NODELAY only on
    # sockets whose proto says TCP, and without it every keep-alive response waits ~40 ms
    # (Nagle's algorithm against the client's delayed ACK; measured: 44 ms -> < 1 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ParameterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(root, *, host: str = "127.0.0.1", port=8000, token_file=None, data_dir=None, workers=1, queue=8,
          log_level: str = "info") -> None:
    """Serve the registry folder ``root`` over HTTP until interrupted (Ctrl-C, SIGTERM).

    Checks everything before listening (root, token file, numbers, the port) and raises
    a one-line :class:`~schedgen.errors.ParameterError` for a bad one. On Ctrl-C uvicorn
    stops accepting requests and finishes the open ones; queued builds are cancelled and a
    running build is interrupted (its worker gets SIGTERM: the build's KeyboardInterrupt
    path, nothing published, its checkpoint kept).
    """
    import uvicorn

    token = None if token_file is None else read_token(token_file)
    app = create_app(root, token=token, data_dir=data_dir, workers=parse_int("workers", workers, minimum=1),
                     queue=parse_int("queue", queue, minimum=0))
    sock = bind(host, port)
    h, p = sock.getsockname()[:2]
    shown = f"[{h}]" if ":" in h else h
    builds = "builds enabled (bearer token)" if token else "builds disabled (no --token-file)"
    print(f"serving {app.state.root} on http://{shown}:{p}/schedules ({builds}); Ctrl-C stops", file=sys.stderr)
    # limit_concurrency: beyond 256 open connections or tasks new requests get 503 instead of
    # exhausting file descriptors; slow clients (headers that never end) are only bounded, not
    # timed out, by uvicorn: serving beyond one machine needs a reverse proxy in front (README).
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=10,
                            server_header=False, limit_concurrency=256, timeout_keep_alive=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after its clean shutdown
        pass
    finally:
        sock.close()
    print("stopped", file=sys.stderr)
