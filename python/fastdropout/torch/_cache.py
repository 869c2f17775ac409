"""A bounded cache of the memory behind freed large outputs.

A large new buffer costs more than the dropout kernel that fills it: Linux maps
fresh pages on first touch, one fault per page, and zeroes each page first
(glibc serves allocations above 32 MiB with a new ``mmap`` every time, so every
call pays this again). A training loop frees its activations each step and
asks for the same sizes the next one, so the outputs of this package's
operators come from a cache of released buffers, the way PyTorch's CUDA
caching allocator serves device memory:

- only buffers of at least ``MIN_BYTES`` are cached (smaller ones come from
  NumPy's allocator, which malloc serves from memory it already has);
- a block is handed to one tensor at a time: it returns to the cache when the
  last reference to that tensor's memory (its storage) is dropped, never
  before, so live outputs never share memory;
- the free blocks held total at most ``limit`` bytes (least recently freed
  ones are dropped first); ``empty_cache()`` drops them all, ``set_limit(0)``
  turns the cache off. Blocks in use do not count: they belong to tensors.

Blocks are NumPy ``uint8`` arrays (NumPy asks Linux for transparent huge pages
for large ones) and each buffer handed out starts at a 64-byte boundary, as
``torch.empty`` does. A block is reused only for a buffer of the same rounded
size (a multiple of ``GRANULE``), so a reused block wastes under ``GRANULE``
bytes. The contents of a reused buffer are the previous tensor's values: the
operators overwrite every element before returning the tensor.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = [
    "CACHE",
    "GRANULE",
    "MIN_BYTES",
    "BufferCache",
    "cache_info",
    "empty_cache",
    "set_cache_limit",
]

MIN_BYTES = 1 << 20  # smaller buffers: NumPy's allocator
GRANULE = 1 << 16  # block sizes are rounded up to this
_ALIGN = 64
DEFAULT_LIMIT = 1 << 30


class BufferCache:
    """Free blocks by rounded size; a block in use is tied to the array handed
    out, and comes back when that array is freed."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        # RLock: a block can come back (a tensor freed by the garbage collector)
        # while this thread is inside one of the methods below.
        self._lock = threading.RLock()
        self._limit = limit
        # key -> (block size, block), oldest release first
        self._free: OrderedDict[int, tuple[int, np.ndarray[Any, Any]]] = OrderedDict()
        self._by_size: dict[int, list[int]] = {}  # block size -> keys in _free
        self._free_bytes = 0
        self._next_key = 0
        # id of the weak reference to an array handed out -> (reference, block)
        self._live: dict[int, tuple[weakref.ref[Any], np.ndarray[Any, Any]]] = {}
        self.hits = 0
        self.misses = 0

    def _after_fork(self) -> None:
        """In a forked child: a new lock (another thread of the parent may have
        held the old one at the fork)."""
        self._lock = threading.RLock()

    # ---- settings and state ---------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        with self._lock:
            self._limit = limit
            self._trim(limit)

    def empty(self) -> None:
        with self._lock:
            self._trim(0)

    def info(self) -> dict[str, int]:
        with self._lock:
            return {
                "limit": self._limit,
                "free_bytes": self._free_bytes,
                "free_blocks": len(self._free),
                "live_blocks": len(self._live),
                "hits": self.hits,
                "misses": self.misses,
            }

    # ---- handing out and taking back -------------------------------------------

    def empty_array(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        """An uninitialised C-contiguous array: from a cached block when it is
        large enough (and the cache is on), else ``np.empty``."""
        nbytes = dtype.itemsize
        for s in shape:
            nbytes *= s
        if nbytes < MIN_BYTES or self._limit <= 0:
            return np.empty(shape, dtype)
        size = -(-(nbytes + _ALIGN) // GRANULE) * GRANULE
        with self._lock:
            block = self._take(size)
            if block is None:
                self.misses += 1
            else:
                self.hits += 1
        if block is None:
            block = np.empty(size, np.uint8)
        start = -block.ctypes.data % _ALIGN
        arr = block[start : start + nbytes].view(dtype).reshape(shape)
        ref = weakref.ref(arr, self._release)
        with self._lock:
            self._live[id(ref)] = (ref, block)
        return arr

    def _take(self, size: int) -> np.ndarray[Any, Any] | None:
        keys = self._by_size.get(size)
        if not keys:
            return None
        key = keys.pop()  # the most recently freed: likeliest still in cache
        if not keys:
            del self._by_size[size]
        _, block = self._free.pop(key)
        self._free_bytes -= size
        return block

    def _release(self, ref: weakref.ref[Any]) -> None:
        """The array handed out was freed: keep its block if it fits."""
        with self._lock:
            entry = self._live.pop(id(ref), None)
            if entry is None:
                return
            block = entry[1]
            size = block.nbytes
            if size > self._limit:
                return
            self._trim(self._limit - size)
            key = self._next_key
            self._next_key += 1
            self._free[key] = (size, block)
            self._by_size.setdefault(size, []).append(key)
            self._free_bytes += size

    def _trim(self, keep: int) -> None:
        """Drop the least recently freed blocks until at most ``keep`` bytes
        are held."""
        while self._free_bytes > keep and self._free:
            key, (size, _block) = self._free.popitem(last=False)
            keys = self._by_size[size]
            keys.remove(key)
            if not keys:
                del self._by_size[size]
            self._free_bytes -= size


CACHE = BufferCache()
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=CACHE._after_fork)


# ---- the public functions (fastdropout.torch) ----------------------------------------


def empty_cache() -> None:
    """Release all free output buffers held by fastdropout.torch's cache to the
    system (buffers still owned by tensors are not affected)."""
    CACHE.empty()


def set_cache_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` of freed output buffers for reuse (default 1 GiB);
    0 turns the cache off. Held buffers beyond the new limit are released."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(
            f"set_cache_limit: nbytes must be an int, got {type(nbytes).__name__}"
        )
    if nbytes < 0:
        raise ValueError(f"set_cache_limit: nbytes must be >= 0, got {nbytes}")
    CACHE.set_limit(nbytes)


def cache_info() -> dict[str, int]:
    """The cache's state: ``limit``, ``free_bytes`` and ``free_blocks`` (held
    for reuse), ``live_blocks`` (owned by tensors now), and the ``hits`` and
    ``misses`` of requests large enough to be cached."""
    return CACHE.info()
