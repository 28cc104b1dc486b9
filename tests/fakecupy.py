"""A strict stand-in for CuPy on the CPU, so that the GPU code path runs in CPU tests.

``make_fake_cupy()`` returns a module that is installed as ``sys.modules["cupy"]``. Its
arrays are :class:`ndarray`, a wrapper (not a NumPy subclass, which ``np.asarray`` would
let through) whose ``__module__`` is ``"cupy"`` (so
``schedgen.kernels.backend.is_cupy_array`` takes them for device arrays) and which is
*stricter* than CuPy where CuPy's rules matter to us:

* any NumPy function or ufunc applied to a device array (``np.exp(d)``, ``np.sum(d)``,
  ``np.asarray(d)``, ``np.concatenate([d])``) raises ``DeviceMisuse``: on a GPU these either
  fail or transfer implicitly, which the code must never rely on;
* mixing a device array with a host array in an operator or a namespace call raises, as
  CuPy does;
* the only device→host transfers are ``d.get()`` and ``cupy.asnumpy(d)`` (counted in
  ``cupy.transfers``); scalars leave through ``float(d)``/``int(d)``/``bool(d)`` and
  ``d.item()``, as on CuPy (counted in ``cupy.scalar_reads``).

The namespace functions (``cupy.exp``, ``cupy.matmul``, ...) are NumPy's, applied to the
arrays' host buffers, so the numbers are NumPy's bit for bit: a build on the fake device
must give the CPU build's bytes, while a real GPU may differ in the last bits.
"""

from __future__ import annotations

import types

import numpy as np


class DeviceMisuse(TypeError):
    """A NumPy call on a device array, or a device/host mix."""


def _host(a):
    """The NumPy array behind a device array; refuses host arrays (no implicit upload)."""
    if isinstance(a, ndarray):
        return a._a
    if isinstance(a, np.ndarray) and a.ndim > 0:
        raise DeviceMisuse(f"a host numpy array (shape {a.shape}) was mixed with device arrays")
    if isinstance(a, (list, tuple)):
        return type(a)(_host(x) for x in a)
    return a


def _wrap(r):
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    return r


def _method(name):
    def method(self, *args, **kwargs):
        r = getattr(self._a, name)(*[_host(a) for a in args], **{k: _host(v) for k, v in kwargs.items()})
        return self if r is self._a else _wrap(r)  # in-place operators return self

    method.__name__ = name
    return method


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: a NumPy array behind a wall that NumPy itself cannot pass."""

    __module__ = "cupy"
    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, a: np.ndarray):
        self._a = a

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise DeviceMisuse(f"numpy ufunc {ufunc.__name__}.{method} called on a device array")

    def __array_function__(self, func, types_, args, kwargs):
        raise DeviceMisuse(f"numpy function {func.__name__} called on a device array")

    def __array__(self, dtype=None, copy=None):
        raise DeviceMisuse("implicit conversion of a device array to NumPy; use .get() or cupy.asnumpy()")

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))

    def __len__(self):
        return len(self._a)

    def get(self):
        _state.transfers += 1
        return np.array(self._a)

    def item(self, *args):
        _state.scalar_reads += 1
        return self._a.item(*args)

    def __float__(self):
        _state.scalar_reads += 1
        return float(self._a)

    def __int__(self):
        _state.scalar_reads += 1
        return int(self._a)

    def __bool__(self):
        _state.scalar_reads += 1
        return bool(self._a)

    def __index__(self):
        _state.scalar_reads += 1
        return self._a.__index__()

    def __getitem__(self, key):
        return _wrap(self._a[_host(key)])

    def __setitem__(self, key, value):
        self._a[_host(key)] = _host(value)

    def __repr__(self):
        return "fakecupy." + repr(self._a)

    def __iter__(self):
        raise DeviceMisuse("iterating over a device array element by element")


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__floordiv__", "__mod__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__",
              "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__and__", "__or__", "__xor__",
              "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__", "__iand__", "__ior__",
              "__neg__", "__pos__", "__abs__", "__invert__", "sum", "max", "min", "mean", "astype", "copy",
              "reshape", "ravel", "transpose", "argmax", "argmin", "argsort", "cumsum", "any", "all", "clip",
              "dot", "fill", "squeeze", "take", "nonzero", "prod", "std", "var", "flatten"):
    setattr(ndarray, _name, _method(_name))


class _State:
    transfers = 0
    scalar_reads = 0


_state = _State()


def make_fake_cupy() -> types.ModuleType:
    """A fresh fake ``cupy`` module (install it with ``monkeypatch.setitem(sys.modules, "cupy", m)``)."""
    mod = types.ModuleType("cupy")
    mod.ndarray = ndarray
    mod.DeviceMisuse = DeviceMisuse
    _state.transfers = 0
    _state.scalar_reads = 0
    mod._state = _state

    def asarray(a, dtype=None, order=None):
        if isinstance(a, ndarray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return ndarray(np.array(a, dtype=dtype, order=order or "K"))  # an explicit upload (a copy)

    def asnumpy(a):
        return a.get() if isinstance(a, ndarray) else np.asarray(a)

    mod.asarray = asarray
    mod.array = asarray
    mod.asnumpy = asnumpy
    mod.is_available = lambda: True
    device = types.SimpleNamespace(synchronize=lambda: None)
    mod.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        Device=lambda *a: device,
    )

    def __getattr__(name):
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (cupy.float32), constants (cupy.pi)

        def fn(*args, **kwargs):
            host_args = [_host(a) for a in args]
            host_kwargs = {k: _host(v) for k, v in kwargs.items()}
            r = attr(*host_args, **host_kwargs)
            out = kwargs.get("out")
            return out if out is not None and r is host_kwargs["out"] else _wrap(r)

        fn.__name__ = name
        return fn

    mod.__getattr__ = __getattr__
    return mod
