"""Test-session settings shared by every module.

Builds keep a small dataset summary under ``$XDG_CACHE_HOME/schedgen`` (see
``schedgen._summary``); the suite points that at a temporary folder of its own, removed at
the end, so running the tests never writes into the user's ``~/.cache``. Set here, at
import, so that subprocesses started by tests inherit it too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="schedgen-tests-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
