"""Read pickled checkpoints without executing anything they contain.

Safety model
------------
A pickle is a program for a small stack machine whose instructions can import any global (``GLOBAL``) and call it
(``REDUCE``/``NEWOBJ``) or hand it state (``BUILD``). ``pickle.load`` and ``torch.load(weights_only=False)`` run
that program as written, so a checkpoint can execute arbitrary code (``os.system``, ``builtins.exec``, or the
``module_src`` that NVIDIA's ``torch_utils.persistence`` stores and ``exec``\\ s on load). This module interprets the
same instructions itself (``SafeUnpickler``) with three rules:

1. A global is resolved only through an explicit allow-list that maps its ``module.name`` to a replacement written
   here (e.g. ``torch._utils._rebuild_tensor_v2`` -> ``rebuild_tensor``, which only records offsets and shapes).
   Nothing is ever imported; any other global raises ``ForbiddenGlobalError`` naming it, before anything is called.
   Python 2 names in protocol 0-2 pickles (``__builtin__.set``) are first translated as ``pickle`` itself would.
2. Only those replacements can be called. ``BUILD`` is accepted only by this module's inert stand-in classes,
   so no object's ``__setstate__`` outside this module ever runs.
3. Every length read from the file is checked against the bytes that remain before anything is allocated, and
   tensor views are checked against the size of their storage.

Tensors come out as ``TensorRef`` (storage, offset, shape, stride) and are materialised on demand with
``TensorRef.load()``; in ``torch.save`` archives the storages stay on disk until then, so a training checkpoint's
optimiser state and discriminator are never read.
``TorchArchive`` reads both ``torch.save`` layouts (zip and the legacy stream) with the same machinery; storages
embedded by ``torch.storage._load_from_bytes`` (how tensors inside NVIDIA's plain pickles are stored) go through it
too, with an allow-list that admits storage types only.
"""

from __future__ import annotations

import _compat_pickle
import functools
import io
import os
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

# --------------------------------------------------------------------------------------------------------------------
# Errors


class PickleError(ValueError):
    """The data is not a pickle this reader accepts (corrupt, truncated, or uses an unsupported feature)."""


class ForbiddenGlobalError(PickleError):
    """The pickle references a global that is not on the allow-list; ``name`` is its ``module.name``."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"refused global '{name}': loading it would import or run code named by the file "
            "(only tensors, containers and known checkpoint classes are reconstructed)"
        )


# --------------------------------------------------------------------------------------------------------------------
# Inert stand-ins: what allow-listed globals turn into


class _Buildable:
    """Marker base: only instances of these classes accept the pickle ``BUILD`` instruction."""

    def __setstate__(self, state: Any) -> None:  # pragma: no cover - overridden
        raise PickleError(f"{type(self).__name__} takes no pickled state")


class StateDict(OrderedDict, _Buildable):
    """Stand-in for ``collections.OrderedDict``; attributes pickled with it (``_metadata``) land in ``attrs``."""

    def __init__(self, items: Any = ()):
        super().__init__(items)
        self.attrs: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise PickleError(f"OrderedDict state must be a dict, got {type(state).__name__}")
        self.attrs.update(state)

    def __reduce__(self):  # keep copy/deepcopy working on a subclass with an extra attribute
        return (StateDict, (list(self.items()),))


class EasyDict(dict, _Buildable):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access; only the dict part matters here)."""

    def __setstate__(self, state: Any) -> None:
        if state and not isinstance(state, dict):
            raise PickleError(f"EasyDict state must be a dict, got {type(state).__name__}")
        self.update(state or {})


class Namespace(_Buildable):
    """Stand-in for ``argparse.Namespace`` (training arguments stored in rosinality checkpoints)."""

    def __init__(self, **kwargs: Any):
        self.values: dict[str, Any] = dict(kwargs)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise PickleError(f"Namespace state must be a dict, got {type(state).__name__}")
        self.values.update(state)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


@dataclass
class PersistentObject:
    """An object pickled by NVIDIA's ``torch_utils.persistence``: its class name and ``__dict__``, never its code.

    ``state`` holds what the original module had: ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``,
    ``_init_kwargs`` and plain attributes. ``module_src_chars`` is the length of the source the file carried (kept
    for diagnostics; the source itself is dropped unread).
    """

    class_name: str
    state: dict[str, Any]
    version: int | None = None
    module_src_chars: int = 0

    @classmethod
    def from_meta(cls, meta: Any) -> PersistentObject:
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise PickleError("persistent object metadata must be a dict with a 'state' dict")
        if meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
            raise PickleError(f"unsupported persistent object type {meta.get('type')!r}")
        src = meta.get("module_src")
        return cls(
            class_name=meta["class_name"],
            state=dict(meta["state"]),
            version=meta.get("version"),
            module_src_chars=len(src) if isinstance(src, str) else 0,
        )


@dataclass(frozen=True)
class StorageType:
    """Stand-in for a storage class such as ``torch.FloatStorage``: only its element type."""

    name: str
    dtype: torch.dtype


@dataclass
class Storage:
    """A flat run of ``numel`` elements of ``dtype``; ``read`` returns its bytes (called at most once)."""

    dtype: torch.dtype
    numel: int
    read: Callable[[], bytes] = field(repr=False)
    _tensor: torch.Tensor | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return self.numel * _element_size(self.dtype)

    def tensor(self) -> torch.Tensor:
        """The storage as a 1-D tensor (read and cached on first use)."""
        if self._tensor is None:
            data = self.read()
            if len(data) != self.nbytes:
                raise PickleError(
                    f"storage holds {len(data)} bytes, expected {self.nbytes} ({self.numel} x {self.dtype})"
                )
            if self.numel == 0:
                self._tensor = torch.empty(0, dtype=self.dtype)
            else:
                self._tensor = torch.frombuffer(bytearray(data), dtype=self.dtype)
        return self._tensor


@dataclass
class TensorRef:
    """A tensor described by the file (a strided view of a ``Storage``); ``load()`` materialises a copy."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def load(self) -> torch.Tensor:
        base = self.storage.tensor()
        return base.as_strided(self.shape, self.stride, self.offset).clone()


# --------------------------------------------------------------------------------------------------------------------
# Replacements for allow-listed globals

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_MAX_NDIM = 32


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_NDIM:
        raise PickleError(f"tensor {what} must be a short tuple of ints, got {type(value).__name__}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise PickleError(f"tensor {what} must hold non-negative ints, got {value!r}")
    return tuple(value)


def rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *unused: Any) -> TensorRef:
    """Replacement for ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor``: validate the view, read nothing."""
    if not isinstance(storage, Storage):
        raise PickleError(f"tensor storage must come from the file's storages, got {type(storage).__name__}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides) or not isinstance(offset, int) or offset < 0:
        raise PickleError(f"tensor view is malformed: offset={offset!r} size={shape} stride={strides}")
    if all(shape):
        last = offset + sum((s - 1) * st for s, st in zip(shape, strides))
        if last >= storage.numel:
            raise PickleError(
                f"tensor of shape {list(shape)} at offset {offset} needs {last + 1} elements, "
                f"its storage has {storage.numel}"
            )
    return TensorRef(storage, offset, shape, strides)


def rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, *unused: Any) -> TensorRef:
    """Replacement for ``torch._utils._rebuild_parameter`` (and ``_with_state``): the data tensor itself."""
    if not isinstance(data, TensorRef):
        raise PickleError(f"parameter data must be a tensor, got {type(data).__name__}")
    return data


def reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``: keeps state, drops ``module_src``."""
    return PersistentObject.from_meta(meta)


def latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """Replacement for ``_codecs.encode`` as protocol-2 pickles use it to store ``bytes``; nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PickleError(f"_codecs.encode is only accepted as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1")


class NumpyDType(_Buildable):
    """Stand-in for ``numpy.dtype`` restricted to plain numeric scalar types."""

    _ALLOWED = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}

    def __init__(self, name: Any, align: Any = False, copy: Any = False):
        if name not in self._ALLOWED:
            raise PickleError(f"numpy dtype {name!r} is not a supported scalar type")
        self.name = name
        self.byteorder = "<"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise PickleError(f"malformed numpy dtype state {state!r}")
        self.byteorder = "<" if state[1] in ("|", "=") else state[1]


def numpy_scalar(dtype: Any, data: Any = None) -> int | float | bool:
    """Replacement for ``numpy.core.multiarray.scalar``: a plain Python number (NVIDIA stores gains this way)."""
    if not isinstance(dtype, NumpyDType) or not isinstance(data, bytes):
        raise PickleError("numpy scalar must be (dtype, bytes)")
    np_dtype = np.dtype(dtype.byteorder + dtype.name)
    if len(data) != np_dtype.itemsize:
        raise PickleError(f"numpy scalar of type {dtype.name} needs {np_dtype.itemsize} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=np_dtype)[0].item()


class _NdarrayType:
    """Marker for the ``numpy.ndarray`` global (the class argument of ``_reconstruct``); never called."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


NDARRAY = _NdarrayType()
_MAX_ARRAY_BYTES = 1 << 30


class NumpyArray(_Buildable):
    """Stand-in for a pickled ``numpy.ndarray`` of a plain numeric dtype; ``value`` holds a copy as a numpy array.

    NVIDIA's StyleGAN3 modules keep sizes and sampling rates as numpy arrays in their state, so every StyleGAN3
    pickle contains them. The array is rebuilt from its dtype, shape and raw bytes only: object arrays (whose
    elements are pickled objects) and shapes that do not match the byte count are refused.
    """

    def __init__(self, value: np.ndarray | None = None):
        self.value = value

    def __setstate__(self, state: Any) -> None:
        if self.value is not None:
            raise PickleError("numpy array state given twice")
        if not isinstance(state, tuple) or len(state) != 5:
            raise PickleError("numpy array state must be (version, shape, dtype, is_fortran, data)")
        _version, shape, dtype, is_fortran, data = state
        if not isinstance(data, (bytes, bytearray)):
            raise PickleError(f"numpy array data must be raw bytes, got {type(data).__name__} (object arrays refused)")
        self.value = _numpy_from_bytes(data, dtype, shape, "F" if is_fortran is True else "C")


def _numpy_from_bytes(data: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, NumpyDType):
        raise PickleError(f"numpy array dtype must be an allow-listed numpy.dtype, got {type(dtype).__name__}")
    if not isinstance(data, (bytes, bytearray)) or order not in ("C", "F"):
        raise PickleError("numpy array must be rebuilt from raw bytes in C or F order")
    dims = _int_tuple(shape, "numpy array shape")
    np_dtype = np.dtype(dtype.byteorder + dtype.name)
    count = 1
    for d in dims:
        count *= d
    if count * np_dtype.itemsize != len(data) or len(data) > _MAX_ARRAY_BYTES:
        raise PickleError(f"numpy array of shape {list(dims)} and type {dtype.name} does not match {len(data)} bytes")
    flat = np.frombuffer(bytes(data), dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    return flat.reshape(dims, order=order)


def numpy_reconstruct(subtype: Any, shape: Any = (0,), typecode: Any = b"b") -> NumpyArray:
    """Replacement for ``numpy.core.multiarray._reconstruct`` (either spelling): an empty array awaiting BUILD."""
    if subtype is not NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise PickleError("numpy _reconstruct is only accepted as _reconstruct(numpy.ndarray, (0,), b'b')")
    return NumpyArray()


def numpy_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> NumpyArray:
    """Replacement for ``numpy.core.numeric._frombuffer`` (pickle protocol 5 arrays): raw bytes only."""
    return NumpyArray(_numpy_from_bytes(buffer, dtype, shape, order))


def _storage_types(prefixes: tuple[str, ...] = ("torch", "torch.cuda")) -> dict[str, StorageType]:
    return {
        f"{prefix}.{name}": StorageType(name, dtype)
        for prefix in prefixes
        for name, dtype in _STORAGE_DTYPES.items()
        if not (prefix == "torch.cuda" and name == "UntypedStorage")
    }


_CONTAINER_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": StateDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
}
_TENSOR_GLOBALS: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": rebuild_tensor,
    "torch._utils._rebuild_tensor": rebuild_tensor,
    "torch._utils._rebuild_parameter": rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": rebuild_parameter,
}

#: Globals a ``torch.save`` archive of state dicts / training checkpoints may reference (rosinality ``.pt``).
TORCH_ARCHIVE_GLOBALS: dict[str, Any] = {
    **_CONTAINER_GLOBALS,
    **_TENSOR_GLOBALS,
    **_storage_types(),
    "argparse.Namespace": Namespace,
}

#: Globals inside ``torch.storage._load_from_bytes`` payloads: storage types only.
STORAGE_PAYLOAD_GLOBALS: dict[str, Any] = _storage_types()


# --------------------------------------------------------------------------------------------------------------------
# The restricted pickle machine


@dataclass(frozen=True)
class _Callable:
    """An allow-listed callable on the stack; the only thing ``REDUCE``/``NEWOBJ`` will call."""

    name: str
    fn: Callable[..., Any]


class _Mark:
    pass


_MARK = _Mark()
_MAX_PROTOCOL = 5


class SafeUnpickler:
    """Interprets pickle protocols 2-5 with an allow-list of globals (see the module docstring).

    ``allowed`` maps ``module.name`` to its replacement: a class or function (called by ``REDUCE``/``NEWOBJ``) or a
    plain marker value (pushed as is, e.g. a ``StorageType``). ``persistent_load`` resolves persistent ids
    (``torch.save`` storages); without it a persistent id is an error.
    """

    def __init__(
        self,
        file: BinaryIO,
        allowed: Mapping[str, Any],
        persistent_load: Callable[[Any], Any] | None = None,
        limit: int | None = None,
    ):
        self.file = file
        self.allowed = allowed
        self.persistent_load = persistent_load
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
        self.remaining = end - start if limit is None else min(limit, end - start)
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.protocol = 0

    # -- reading ---------------------------------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise PickleError(f"pickle is truncated: needs {n} more bytes, {self.remaining} remain")
        data = self.file.read(n)
        if len(data) != n:
            raise PickleError(f"pickle is truncated: needs {n} more bytes, got {len(data)}")
        self.remaining -= n
        return data

    def _line(self) -> bytes:
        chunk = bytearray()
        while True:
            byte = self._read(1)
            if byte == b"\n":
                return bytes(chunk)
            chunk += byte
            if len(chunk) > 4096:
                raise PickleError("pickle text line is implausibly long")

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._read(n), "little")

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            raise PickleError("pickle uses MARK data without a MARK")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def _global(self, module: Any, name: Any) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise PickleError("global names must be strings")
        if self.protocol < 3:  # Python 2 names, as pickle.Unpickler(fix_imports=True) translates them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full not in self.allowed:
            raise ForbiddenGlobalError(full)
        target = self.allowed[full]
        return _Callable(full, target) if callable(target) else target

    def _call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        if not isinstance(func, _Callable):
            raise PickleError(f"pickle tries to call a {type(func).__name__}, which is not an allow-listed global")
        if not isinstance(args, tuple) or (kwargs is not None and not isinstance(kwargs, dict)):
            raise PickleError(f"malformed arguments for {func.name}")
        try:
            return func.fn(*args, **(kwargs or {}))
        except PickleError:
            raise
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise PickleError(f"cannot rebuild {func.name} from the given arguments: {exc}") from None

    def _persistent(self, pid: Any) -> Any:
        if self.persistent_load is None:
            raise PickleError("pickle refers to external data (persistent id) where none is expected")
        return self.persistent_load(pid)

    # -- the machine -----------------------------------------------------------------------------------------------

    def load(self) -> Any:
        """Run the pickle to its STOP instruction and return the object it built."""
        try:
            return self._run()
        except PickleError:
            raise
        except (IndexError, KeyError, TypeError, ValueError, AttributeError, RecursionError, MemoryError) as exc:
            raise PickleError(f"malformed pickle ({type(exc).__name__}: {exc})") from None

    def _run(self) -> Any:  # noqa: C901 - one branch per opcode reads best as a flat dispatch
        stack, memo = self.stack, self.memo
        while True:
            op = self._read(1)
            stack = self.stack
            if op == b"\x80":  # PROTO
                self.protocol = self._uint(1)
                if self.protocol > _MAX_PROTOCOL:
                    raise PickleError(f"unsupported pickle protocol {self.protocol}")
            elif op == b"\x95":  # FRAME
                self._uint(8)
            elif op == b".":  # STOP
                if len(stack) != 1 or self.marks:
                    raise PickleError("pickle ended with an unbalanced stack")
                return stack.pop()
            # -- constants
            elif op == b"N":
                stack.append(None)
            elif op == b"\x88":
                stack.append(True)
            elif op == b"\x89":
                stack.append(False)
            elif op == b"K":  # BININT1
                stack.append(self._uint(1))
            elif op == b"M":  # BININT2
                stack.append(self._uint(2))
            elif op == b"J":  # BININT
                stack.append(int.from_bytes(self._read(4), "little", signed=True))
            elif op == b"\x8a":  # LONG1
                stack.append(int.from_bytes(self._read(self._uint(1)), "little", signed=True))
            elif op == b"\x8b":  # LONG4
                stack.append(int.from_bytes(self._read(self._uint(4)), "little", signed=True))
            elif op == b"G":  # BINFLOAT
                stack.append(struct.unpack(">d", self._read(8))[0])
            elif op == b"\x8c":  # SHORT_BINUNICODE
                stack.append(self._read(self._uint(1)).decode("utf-8", "surrogatepass"))
            elif op == b"X":  # BINUNICODE
                stack.append(self._read(self._uint(4)).decode("utf-8", "surrogatepass"))
            elif op == b"\x8d":  # BINUNICODE8
                stack.append(self._read(self._uint(8)).decode("utf-8", "surrogatepass"))
            elif op == b"C":  # SHORT_BINBYTES
                stack.append(self._read(self._uint(1)))
            elif op == b"B":  # BINBYTES
                stack.append(self._read(self._uint(4)))
            elif op == b"\x8e":  # BINBYTES8
                stack.append(self._read(self._uint(8)))
            elif op == b"\x96":  # BYTEARRAY8
                stack.append(bytearray(self._read(self._uint(8))))
            elif op == b"U":  # SHORT_BINSTRING (Python 2 str)
                stack.append(self._read(self._uint(1)).decode("latin1"))
            elif op == b"T":  # BINSTRING
                stack.append(self._read(self._uint(4)).decode("latin1"))
            # -- containers
            elif op == b"(":  # MARK
                self.marks.append(stack)
                self.stack = []
            elif op == b")":
                stack.append(())
            elif op == b"]":
                stack.append([])
            elif op == b"}":
                stack.append({})
            elif op == b"\x8f":  # EMPTY_SET
                stack.append(set())
            elif op == b"t":  # TUPLE
                items = self._pop_mark()
                self.stack.append(tuple(items))
            elif op == b"\x85":
                stack[-1] = (stack[-1],)
            elif op == b"\x86":
                stack[-2:] = [tuple(stack[-2:])]
            elif op == b"\x87":
                stack[-3:] = [tuple(stack[-3:])]
            elif op == b"l":  # LIST
                items = self._pop_mark()
                self.stack.append(items)
            elif op == b"d":  # DICT
                items = self._pop_mark()
                self.stack.append(dict(zip(items[::2], items[1::2])))
            elif op == b"\x91":  # FROZENSET
                items = self._pop_mark()
                self.stack.append(frozenset(items))
            elif op == b"a":  # APPEND
                value = stack.pop()
                self._list(stack[-1]).append(value)
            elif op == b"e":  # APPENDS
                items = self._pop_mark()
                self._list(self.stack[-1]).extend(items)
            elif op == b"s":  # SETITEM
                value = stack.pop()
                key = stack.pop()
                self._dict(stack[-1])[key] = value
            elif op == b"u":  # SETITEMS
                items = self._pop_mark()
                target = self._dict(self.stack[-1])
                for key, value in zip(items[::2], items[1::2]):
                    target[key] = value
            elif op == b"\x90":  # ADDITEMS
                items = self._pop_mark()
                target = self.stack[-1]
                if not isinstance(target, set):
                    raise PickleError("ADDITEMS on something that is not a set")
                target.update(items)
            # -- stack and memo
            elif op == b"0":  # POP
                if stack:
                    stack.pop()
                else:
                    self._pop_mark()
            elif op == b"1":  # POP_MARK
                self._pop_mark()
            elif op == b"2":  # DUP
                stack.append(stack[-1])
            elif op == b"q":  # BINPUT
                memo[self._uint(1)] = stack[-1]
            elif op == b"r":  # LONG_BINPUT
                memo[self._uint(4)] = stack[-1]
            elif op == b"\x94":  # MEMOIZE
                memo[len(memo)] = stack[-1]
            elif op == b"h":  # BINGET
                stack.append(self._memo_get(self._uint(1)))
            elif op == b"j":  # LONG_BINGET
                stack.append(self._memo_get(self._uint(4)))
            # -- globals, calls, state
            elif op == b"c":  # GLOBAL
                module = self._line().decode("utf-8")
                name = self._line().decode("utf-8")
                stack.append(self._global(module, name))
            elif op == b"\x93":  # STACK_GLOBAL
                name = stack.pop()
                module = stack.pop()
                stack.append(self._global(module, name))
            elif op == b"R":  # REDUCE
                args = stack.pop()
                stack[-1] = self._call(stack[-1], args)
            elif op == b"\x81":  # NEWOBJ
                args = stack.pop()
                stack[-1] = self._call(stack[-1], args)
            elif op == b"\x92":  # NEWOBJ_EX
                kwargs = stack.pop()
                args = stack.pop()
                stack[-1] = self._call(stack[-1], args, kwargs)
            elif op == b"b":  # BUILD
                state = stack.pop()
                target = stack[-1]
                if not isinstance(target, _Buildable):
                    raise PickleError(f"pickle tries to set the state of a {type(target).__name__}; refused")
                target.__setstate__(state)
            elif op == b"Q":  # BINPERSID
                stack[-1] = self._persistent(stack[-1])
            else:
                raise PickleError(
                    f"unsupported pickle instruction {op!r} (only protocols 2-5 without extension codes or "
                    "out-of-band buffers are read)"
                )

    def _memo_get(self, index: int) -> Any:
        if index not in self.memo:
            raise PickleError(f"pickle refers to memo entry {index}, which was never stored")
        return self.memo[index]

    @staticmethod
    def _list(target: Any) -> list:
        if not isinstance(target, list):
            raise PickleError(f"APPEND on a {type(target).__name__}; only lists are accepted")
        return target

    @staticmethod
    def _dict(target: Any) -> dict:
        if not isinstance(target, dict):
            raise PickleError(f"SETITEM on a {type(target).__name__}; only dicts are accepted")
        return target


def safe_unpickle(
    file: BinaryIO,
    allowed: Mapping[str, Any],
    persistent_load: Callable[[Any], Any] | None = None,
) -> Any:
    """Read one pickle from ``file`` (positioned at its start) with the given allow-list."""
    return SafeUnpickler(file, allowed, persistent_load).load()


# --------------------------------------------------------------------------------------------------------------------
# torch.save archives

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_PICKLE_ENTRY = 1 << 28
# torch.save stores entries uncompressed; a compressed entry may expand this much (plus a fixed allowance for small
# all-zero buffers), summed over the archive, so a small zip cannot make the reader allocate gigabytes (zip bomb).
_MAX_EXPANSION = 32
_EXPANSION_ALLOWANCE = 64 << 20


def _check_storage_pid(pid: Any) -> tuple[StorageType, str, int]:
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
        raise PickleError(f"unsupported persistent id {str(pid)[:80]!r} (only tensor storages are read)")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, StorageType):
        raise PickleError(f"storage type must be an allow-listed storage class, got {type(storage_type).__name__}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise PickleError(f"malformed storage reference {pid!r}")
    return storage_type, key, numel


class TorchArchive:
    """A ``torch.save`` file (zip or legacy layout) read without ``torch.load``; use as a context manager.

    ``load()`` returns the saved object with tensors as ``TensorRef``; their data is read while the archive is
    open (``TensorRef.load()``), so materialise what you need inside the ``with`` block.
    """

    def __init__(self, file: BinaryIO | str | os.PathLike, allowed: Mapping[str, Any] = TORCH_ARCHIVE_GLOBALS):
        self._owns_file = not hasattr(file, "read")
        self.file: BinaryIO = open(file, "rb") if self._owns_file else file  # noqa: SIM115 - closed in close()
        self.allowed = allowed
        self._zip: zipfile.ZipFile | None = None
        self.layout = "zip" if self.file.read(4) == _ZIP_MAGIC else "legacy"
        self._size = self.file.seek(0, os.SEEK_END)
        self._expanded = 0
        self.file.seek(0)

    def __enter__(self) -> TorchArchive:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._owns_file:
            self.file.close()

    def load(self) -> Any:
        return self._load_zip() if self.layout == "zip" else self._load_legacy()

    # -- zip layout: <prefix>/data.pkl + <prefix>/data/<key> ------------------------------------------------------

    def _load_zip(self) -> Any:
        try:
            self._zip = zipfile.ZipFile(self.file)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise PickleError(f"damaged zip archive: {exc}") from None
        entries = {info.filename: info for info in self._zip.infolist()}
        pickles = [name for name in entries if name == "data.pkl" or name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise PickleError(f"a torch.save zip holds exactly one data.pkl; found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = entries.get(prefix + "byteorder")
        if byteorder is not None and self._zip_read(byteorder).strip() not in (b"little", b""):
            raise PickleError("big-endian torch archives are not supported")
        info = entries[pickles[0]]
        if info.file_size > _MAX_PICKLE_ENTRY:
            raise PickleError(f"data.pkl is implausibly large ({info.file_size} bytes)")
        self._check_expansion(info)
        storages: dict[str, Storage] = {}

        def persistent_load(pid: Any) -> Storage:
            storage_type, key, numel = _check_storage_pid(pid)
            if key not in storages:
                entry = entries.get(f"{prefix}data/{key}")
                if entry is None:
                    raise PickleError(f"storage '{key}' is missing from the archive")
                storage = Storage(storage_type.dtype, numel, read=functools.partial(self._zip_read, entry))
                if entry.file_size != storage.nbytes:
                    raise PickleError(
                        f"storage '{key}' holds {entry.file_size} bytes, the pickle says {storage.nbytes} "
                        f"({numel} x {storage_type.dtype})"
                    )
                self._check_expansion(entry)
                storages[key] = storage
            elif storages[key].dtype != storage_type.dtype:
                raise PickleError(f"storage '{key}' is used with two element types")
            return storages[key]

        data = io.BytesIO(self._zip_read(info))
        return safe_unpickle(data, self.allowed, persistent_load)

    def _check_expansion(self, entry: zipfile.ZipInfo) -> None:
        """Refuse compressed entries that would expand far beyond the archive's own size (before reading them)."""
        if entry.compress_type == zipfile.ZIP_STORED:
            if entry.file_size > self._size:
                raise PickleError(f"archive entry {entry.filename} claims {entry.file_size} bytes, more than the file")
            return
        self._expanded += entry.file_size
        if self._expanded > _MAX_EXPANSION * self._size + _EXPANSION_ALLOWANCE:
            raise PickleError(
                f"compressed entries expand to {self._expanded} bytes from a {self._size}-byte archive (entry "
                f"{entry.filename}); refused as a zip bomb (torch.save never compresses)"
            )

    def _zip_read(self, entry: zipfile.ZipInfo) -> bytes:
        try:
            return self._zip.read(entry)
        except (
            zipfile.BadZipFile,
            OSError,
            EOFError,
            zlib.error,
            NotImplementedError,
            RuntimeError,
            ValueError,
        ) as exc:
            # NotImplementedError: unknown compression method; RuntimeError: an encrypted entry; ValueError: a
            # local header whose name is not UTF-8.
            raise PickleError(f"archive entry {entry.filename} is damaged: {exc}") from None

    # -- legacy layout: magic, protocol, sys_info, object, storage keys, then (numel, bytes) per storage ----------

    def _load_legacy(self) -> Any:
        def plain_pickle() -> Any:  # the header pickles and the key list hold plain data only
            return SafeUnpickler(self.file, {}).load()

        if plain_pickle() != _LEGACY_MAGIC:
            raise PickleError("not a torch.save file (bad magic number)")
        if plain_pickle() != _LEGACY_PROTOCOL:
            raise PickleError("unsupported legacy torch.save protocol version")
        sys_info = plain_pickle()
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise PickleError("big-endian torch archives are not supported")
        storages: dict[str, Storage] = {}

        def persistent_load(pid: Any) -> Storage:
            storage_type, key, numel = _check_storage_pid(pid)
            if len(pid) > 5 and pid[5] is not None:
                raise PickleError("legacy storage views are not supported")
            if key not in storages:
                storages[key] = Storage(storage_type.dtype, numel, read=_unread)
            elif storages[key].dtype != storage_type.dtype:
                raise PickleError(f"storage '{key}' is used with two element types")
            return storages[key]

        obj = safe_unpickle(self.file, self.allowed, persistent_load)
        keys = plain_pickle()
        if not isinstance(keys, list) or set(keys) != set(storages):
            raise PickleError("legacy archive's storage list does not match the storages its pickle uses")
        position = self.file.tell()
        end = self.file.seek(0, os.SEEK_END)
        for key in keys:
            storage = storages[key]
            self.file.seek(position)
            head = self.file.read(8)
            if len(head) != 8 or int.from_bytes(head, "little") != storage.numel:
                raise PickleError(f"legacy storage '{key}' header is damaged or does not match its tensor")
            storage.read = functools.partial(self._read_at, position + 8, storage.nbytes)
            position += 8 + storage.nbytes
            if position > end:
                raise PickleError(f"legacy archive is truncated inside storage '{key}'")
        return obj

    def _read_at(self, offset: int, size: int) -> bytes:
        self.file.seek(offset)
        data = self.file.read(size)
        if len(data) != size:
            raise PickleError(f"archive is truncated: storage at byte {offset} needs {size} bytes")
        return data


def materialise(obj: Any) -> Any:
    """Replace ``TensorRef`` placeholders with real tensors in nested dicts, lists and tuples."""
    if isinstance(obj, TensorRef):
        return obj.load()
    if isinstance(obj, dict):
        return {key: materialise(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(materialise(value) for value in obj)
    return obj


def load_torch_file(path: str | os.PathLike, allowed: Mapping[str, Any] = TORCH_ARCHIVE_GLOBALS) -> Any:
    """The object in a ``torch.save`` file with its tensors loaded, read by the restricted unpickler (no code runs;
    anything outside ``allowed`` raises :class:`PickleError`)."""
    with TorchArchive(path, allowed) as archive:
        return materialise(archive.load())


def _unread() -> bytes:
    raise PickleError("storage data was never located in the archive")


def load_storage_payload(payload: Any) -> Storage:
    """Replacement for ``torch.storage._load_from_bytes``: a storage saved by ``torch.save`` into ``payload``."""
    if not isinstance(payload, (bytes, bytearray)):
        raise PickleError(f"_load_from_bytes expects bytes, got {type(payload).__name__}")
    with TorchArchive(io.BytesIO(payload), STORAGE_PAYLOAD_GLOBALS) as archive:
        storage = archive.load()
        if not isinstance(storage, Storage):
            raise PickleError(f"_load_from_bytes payload holds a {type(storage).__name__}, expected a storage")
        data = storage.read()  # read now: the archive closes at the end of this block
    storage.read = lambda: data
    return storage


#: Globals a stylegan2-ada-pytorch network pickle may reference (``pickle.dump`` of persistent modules).
NVIDIA_PICKLE_GLOBALS: dict[str, Any] = {
    **_CONTAINER_GLOBALS,
    **_TENSOR_GLOBALS,
    "torch.storage._load_from_bytes": load_storage_payload,
    "torch_utils.persistence._reconstruct_persistent_obj": reconstruct_persistent_obj,
    "dnnlib.util.EasyDict": EasyDict,
    "numpy.dtype": NumpyDType,
    "numpy.ndarray": NDARRAY,
    **{
        f"numpy.{core}.{name}": fn
        for core in ("core", "_core")
        for name, fn in (
            ("multiarray.scalar", numpy_scalar),
            ("multiarray._reconstruct", numpy_reconstruct),
            ("numeric._frombuffer", numpy_frombuffer),
        )
    },
    "_codecs.encode": latin1_encode,
}
