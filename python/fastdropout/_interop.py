"""Array types come back as they came in (docs/spec.md section 12, NumPy's rules).

``keeps_array_type("x", ...)`` wraps a function whose named array arguments may be
of other array types than ``numpy.ndarray``; exact ndarrays (and lists, scalars,
anything else NumPy converts) go straight through. The function itself only ever
sees ndarrays; its array results are turned back into the callers' kind:

- ``numpy.ma.MaskedArray``: the result is a masked array with the input's mask
  (the OR of the masks when several array arguments are masked, broadcast to the
  result) and its ``fill_value``; dropout runs over every element, masked or not
  (the stream positions follow the C order of the whole array), and the data under
  the mask is the input's data, unchanged, as NumPy's masked operations leave it.
- other ndarray subclasses (``np.matrix``, user subclasses): the result is wrapped
  with the input's ``__array_wrap__``, as ufuncs do (the one of highest
  ``__array_priority__`` when several); ``np.memmap`` gives a plain ndarray.
- DLPack-capable CPU arrays (torch tensors, JAX arrays, other Array API arrays):
  read through ``np.from_dlpack`` (no copy) and the result handed back through the
  producer's own library: ``torch.from_numpy`` (no copy) for torch, the array's
  ``__array_namespace__().from_dlpack`` otherwise (JAX copies into its own
  buffer). Nothing here imports a framework: the library is the input's own
  module, looked up in ``sys.modules``. A tensor that requires grad, or an array
  on another device than the CPU, is a TypeError saying what takes it; a
  ``bfloat16`` tensor is read and returned through ``ml_dtypes`` when that is
  installed (``_dlpack_in`` / ``_to_producer``), so it gets the same dtype
  check as a NumPy ``bfloat16`` array.
- dask arrays (recognised by their module, dask is not imported) go to the lazy
  function of the same name in ``fastdropout.dask`` (docs/spec.md section 11);
  where there is none they would have to be computed whole: TypeError naming
  ``fastdropout.dask``.

With ``out=`` the result is ``out`` itself, as for ufuncs (a DLPack ``out`` is
written through its zero-copy view and returned as given). An array result that
is one of the converted inputs (a gradient passed through) is returned as that
input object. Tuples of results (``return_mask=True``) are converted element by
element; masks and ``None`` pass unchanged.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from typing import Any, Callable, TypeVar

import numpy as np

from . import _bfloat16

__all__ = ["keeps_array_type"]

_F = TypeVar("_F", bound=Callable[..., Any])
_ndarray = np.ndarray
_MaskedArray = np.ma.MaskedArray
_KDL_CPU = 1  # DLPack's device type of host memory


def _root_module(obj: object) -> str:
    return type(obj).__module__.partition(".")[0]


def _device_error(name: str, value: object, fn_name: str) -> TypeError:
    root = _root_module(value)
    if root == "torch":
        where = (
            "fastdropout runs on the CPU: move it there first (x.cpu()); "
            "fastdropout.torch takes CPU tensors, autograd included"
        )
    elif root in ("jax", "jaxlib"):
        where = (
            "fastdropout.jax.dropout (jax.numpy, jit-able) takes arrays on any "
            "JAX device, with the same stream"
        )
    else:
        where = "copy it to host memory first (fastdropout runs on the CPU)"
    return TypeError(
        f"{fn_name}: {name} is a {type(value).__name__} on a device other than the "
        f"CPU; {where}"
    )


def _bfloat16_for_tensor() -> Any:
    """NumPy's bfloat16 dtype to read a bfloat16 tensor with: ml_dtypes is imported
    here if it is installed but not yet loaded (a torch bfloat16 tensor can exist
    without it); None when it is not installed."""
    if "ml_dtypes" not in sys.modules:
        try:
            importlib.import_module("ml_dtypes")
        except ImportError:
            return None
    return _bfloat16.bfloat16_dtype()


def _dlpack_in(name: str, value: Any, fn_name: str) -> np.ndarray[Any, Any]:
    """The ndarray view (no copy) of a DLPack-capable CPU array."""
    if getattr(value, "requires_grad", False) is True:
        raise TypeError(
            f"{fn_name}: {name} is a tensor that requires grad; fastdropout's NumPy "
            "functions would cut it from the autograd graph: use fastdropout.torch "
            "(the same stream, with autograd), or pass x.detach()"
        )
    try:
        device = value.__dlpack_device__()[0]
    except Exception:  # noqa: BLE001 - no usable device: let from_dlpack say why
        device = _KDL_CPU
    if int(device) != _KDL_CPU:
        raise _device_error(name, value, fn_name)
    if _root_module(value) == "torch" and str(value.dtype) == "torch.bfloat16":
        # NumPy has no DLPack bfloat16: read the 16-bit words, then view them as
        # ml_dtypes' bfloat16 (fastdropout's dtype check then decides).
        bf16 = _bfloat16_for_tensor()
        if bf16 is None:
            raise TypeError(
                f"{fn_name}: {name} is a bfloat16 tensor; reading it needs the "
                "ml_dtypes package (pip install ml_dtypes)"
            )
        words = value.view(sys.modules["torch"].int16)
        return np.from_dlpack(words).view(bf16)
    try:
        return np.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"{fn_name}: {name} ({type(value).__name__}) could not be read through "
            f"DLPack ({exc})"
        ) from None


def _to_producer(y: np.ndarray[Any, Any], like: Any) -> Any:
    """``y`` as an array of ``like``'s library (zero copy where it allows)."""
    if _root_module(like) == "torch":
        torch = sys.modules["torch"]
        if _bfloat16.is_bfloat16(y.dtype):
            return torch.from_numpy(y.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(y)
    namespace = getattr(like, "__array_namespace__", None)
    if namespace is not None:
        return namespace().from_dlpack(y)
    return y  # a DLPack producer without an Array API namespace: NumPy it is


class _Call:
    """The conversions of one call: inputs replaced, how to convert results back."""

    __slots__ = ("masked", "originals", "producer", "subclass")

    def __init__(self) -> None:
        self.masked: list[np.ma.MaskedArray[Any, Any]] = []
        self.subclass: np.ndarray[Any, Any] | None = None
        self.producer: Any = None
        self.originals: dict[int, Any] = {}  # id(converted) -> the caller's object

    def convert(self, name: str, value: Any, fn_name: str) -> Any:
        if isinstance(value, _ndarray):
            if isinstance(value, _MaskedArray):
                self.masked.append(value)
                arr = value.view(_ndarray)
            else:
                if type(value) is not np.memmap and (
                    self.subclass is None
                    or getattr(value, "__array_priority__", 0.0)
                    > getattr(self.subclass, "__array_priority__", 0.0)
                ):
                    self.subclass = value
                arr = np.asarray(value)
        elif _root_module(value) == "dask":
            raise TypeError(
                f"{fn_name}: {name} is a dask array, which would have to be computed "
                "whole here; use fastdropout.dask (lazy, block by block, the same "
                "stream), or compute it first"
            )
        elif hasattr(value, "__dlpack__"):
            arr = _dlpack_in(name, value, fn_name)
            if self.producer is None:
                self.producer = value
        else:
            return value  # lists, scalars, __array__ objects: NumPy converts them
        self.originals[id(arr)] = value
        return arr

    def back(self, result: Any) -> Any:
        if type(result) is tuple:
            return tuple(self._back_one(r) for r in result)
        return self._back_one(result)

    def _back_one(self, r: Any) -> Any:
        original = self.originals.get(id(r))
        if original is not None:
            return original  # an input passed through (or out=)
        if not isinstance(r, _ndarray):
            return r
        if self.producer is not None:
            return _to_producer(r, self.producer)
        if self.masked:
            return self._masked(r)
        if self.subclass is not None:
            return self.subclass.__array_wrap__(r)
        return r

    def _masked(self, r: np.ndarray[Any, Any]) -> np.ma.MaskedArray[Any, Any]:
        mask: Any = np.ma.nomask
        for m in self.masked:
            if m.mask is not np.ma.nomask and np.shape(m.mask) != ():
                try:
                    mm = np.broadcast_to(m.mask, r.shape)
                except ValueError:
                    continue  # not of the result's shape (a bias): its mask does not map
                mask = mm.copy() if mask is np.ma.nomask else mask | mm
            elif m.mask is not np.ma.nomask and bool(m.mask):
                mask = np.ones(r.shape, bool)
        first = self.masked[0]
        if mask is not np.ma.nomask and first.shape == r.shape:
            np.copyto(r, first.data, where=mask, casting="unsafe")
        return np.ma.MaskedArray(r, mask=mask, fill_value=first.fill_value)


# Functions that fastdropout.dask provides with the same signature.
_LAZY = frozenset(
    ("dropout", "spatial_dropout", "dropout_backward", "alpha_dropout", "dropout_add")
)


def keeps_array_type(*names: str, out: str | None = "out") -> Callable[[_F], _F]:
    """Decorator: the array arguments ``names`` (and ``out``) of the function may be
    masked arrays, ndarray subclasses or DLPack CPU arrays; results come back as
    the callers' kind (see the module's docstring). Exact ndarrays cost one type
    check per argument."""

    def decorate(fn: _F) -> _F:
        params = list(inspect.signature(fn).parameters.values())
        positional = {
            p.name: i
            for i, p in enumerate(params)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        for n in names:
            if n not in {p.name for p in params}:
                raise TypeError(f"{fn.__name__} has no argument {n!r}")
        spots = tuple((n, positional.get(n)) for n in names)
        out_spot = (out, positional.get(out)) if out is not None else None
        fn_name = fn.__name__.lstrip("_").replace("_general", "")
        # a public function with a lazy counterpart takes dask arrays there (the
        # _general helpers' callers dispatch before them; the reference is NumPy's)
        lazy = (
            fn.__name__
            if fn.__name__ in _LAZY and fn.__module__ != "fastdropout.reference"
            else None
        )

        # The common case first: one array argument, given positionally, an
        # exact ndarray (one length test and one type test).
        first = spots[0][1] if len(spots) == 1 and spots[0][1] is not None else None
        if first is None:
            first = sys.maxsize  # never below len(args): the general loop decides

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nargs = len(args)
            if first < nargs and type(args[first]) is _ndarray:
                return fn(*args, **kwargs)
            call: _Call | None = None
            new_args = args
            for name, i in spots:
                in_args = i is not None and i < nargs
                value = args[i] if in_args else kwargs.get(name)  # type: ignore[index]
                if type(value) is _ndarray or value is None:
                    continue
                if lazy and _root_module(value) == "dask":
                    lazy_fn = getattr(importlib.import_module("fastdropout.dask"), lazy)
                    return lazy_fn(*args, **kwargs)  # the same call, block by block
                if call is None:
                    call = _Call()
                    new_args = list(args)  # type: ignore[assignment]
                converted = call.convert(name, value, fn_name)
                if in_args:
                    new_args[i] = converted  # type: ignore[index]
                else:
                    kwargs[name] = converted
            if call is None:
                return fn(*args, **kwargs)
            if out_spot is not None:
                name, i = out_spot
                in_args = i is not None and i < nargs
                value = args[i] if in_args else kwargs.get(name)  # type: ignore[index]
                if value is not None:
                    view = value
                    if not isinstance(value, _ndarray) and hasattr(value, "__dlpack__"):
                        view = _dlpack_in(name, value, fn_name)
                    call.originals[id(view)] = value  # the result is out itself
                    if in_args:
                        new_args[i] = view  # type: ignore[index]
                    else:
                        kwargs[name] = view
            return call.back(fn(*new_args, **kwargs))

        return wrapper  # type: ignore[return-value]

    return decorate
