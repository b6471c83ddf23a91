"""tg.save / tg.load: tensors and (nested) state dicts in a NumPy ``.npz`` file.

No pickle in either direction: every array is stored as a plain ``.npy`` entry, and the
structure around them (dicts, lists, tuples, numbers, strings, None) as a JSON manifest
in the entry ``__tapegrad__``. ``tg.load`` reads with ``allow_pickle=False``, checks each
entry against the manifest (present, same shape and dtype) before building anything,
and raises ``RuntimeError`` naming the entry otherwise. A plain ``np.savez`` file of
arrays (no manifest) loads as a dict of tensors.

Entry names follow the keys (``0.weight``, ``state/0/exp_avg``), so a checkpoint can be
inspected with ``np.load`` alone.
"""
import json
import os
import tempfile
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import tapegrad as tg

from .nn.parameter import Parameter
from .tensor import Tensor

__all__ = ["save", "load"]

MANIFEST = "__tapegrad__"
FORMAT = "tapegrad-npz"
VERSION = 1
_DTYPES = ("float32", "float64", "int64", "bool")


class _Writer:
    def __init__(self):
        self.arrays = {}
        self.by_id = {}

    def key(self, path):
        base = "/".join(path) or "tensor"
        base = base.replace("\x00", "")
        name, n = base, 1
        while name in self.arrays or name == MANIFEST:
            name = f"{base}#{n}"
            n += 1
        return name

    def encode(self, obj, path):
        if obj is None:
            return {"type": "none"}
        if isinstance(obj, (bool, np.bool_)):
            return {"type": "bool", "value": bool(obj)}
        if isinstance(obj, (int, np.integer)):
            return {"type": "int", "value": int(obj)}
        if isinstance(obj, (float, np.floating)):
            return {"type": "float", "value": float(obj)}
        if isinstance(obj, str):
            return {"type": "str", "value": obj}
        if isinstance(obj, Tensor):
            return self.array(obj, path)
        if isinstance(obj, np.ndarray):
            return self.array(obj, path)
        if isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if not isinstance(k, (str, int, np.integer, float, bool, type(None))):
                    raise TypeError(f"tg.save: dict keys must be str, int, float, bool or "
                                    f"None, got {type(k).__name__} at {'/'.join(path)!r}")
                items.append([self.encode(k, path + ["key"]), self.encode(v, path + [str(k)])])
            kind = "odict" if isinstance(obj, OrderedDict) else "dict"
            return {"type": kind, "items": items}
        if isinstance(obj, (list, tuple)):
            kind = "tuple" if isinstance(obj, tuple) else "list"
            return {"type": kind,
                    "items": [self.encode(v, path + [str(i)]) for i, v in enumerate(obj)]}
        if isinstance(obj, tg.dtype):
            return {"type": "dtype", "value": obj.name}
        raise TypeError(f"tg.save: cannot save an object of type {type(obj).__name__} at "
                        f"{'/'.join(path) or 'the top level'!r} (supported: Tensor, "
                        "numpy array, dict, list, tuple, str, int, float, bool, None)")

    def array(self, obj, path):
        is_tensor = isinstance(obj, Tensor)
        if is_tensor:
            if id(obj) in self.by_id:
                return {"type": "ref", "key": self.by_id[id(obj)]}
            arr = obj.detach().numpy()
        else:
            arr = obj
        if arr.dtype.name not in _DTYPES:
            if arr.dtype.kind in "iu":
                arr = arr.astype(np.int64)
            elif arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
                arr = arr.astype(np.float32)
            else:
                raise TypeError(f"tg.save: cannot save an array of dtype {arr.dtype} at "
                                f"{'/'.join(path)!r}")
        key = self.key(path)
        self.arrays[key] = np.asarray(arr, order="C")
        node = {"type": "tensor" if is_tensor else "ndarray", "key": key,
                "dtype": arr.dtype.name, "shape": list(arr.shape)}
        if is_tensor:
            self.by_id[id(obj)] = key
            node["requires_grad"] = bool(obj.requires_grad)
            node["parameter"] = isinstance(obj, Parameter)
        return node


def save(obj, f):
    """Saves a tensor, or a (nested) dict/list of tensors and plain values, to ``f``.

    ``f`` is a path (written exactly there, atomically: a temporary file is renamed)
    or a binary file object. Typical use: ``tg.save(model.state_dict(), "model.npz")``,
    ``tg.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)``.
    """
    w = _Writer()
    tree = w.encode(obj, [])
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    arrays = dict(w.arrays)
    arrays[MANIFEST] = np.array(manifest)
    if hasattr(f, "write"):
        np.savez(f, **arrays)
        return
    path = os.fspath(f)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tg-save-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Reader:
    def __init__(self, z, name):
        self.z = z
        self.name = name
        self.files = set(z.files)
        self.cache = {}

    def fail(self, msg):
        raise RuntimeError(f"tg.load({self.name}): {msg}")

    def check(self, node):
        """Reads and checks every array the manifest names, before anything is built."""
        kind = node.get("type") if isinstance(node, dict) else None
        if kind in ("tensor", "ndarray"):
            key = node["key"]
            if key not in self.files:
                self.fail(f"entry {key!r} is missing from the file")
            try:
                arr = self.z[key]
            except ValueError as exc:
                self.fail(f"entry {key!r} cannot be read without pickle ({exc})")
            if list(arr.shape) != list(node["shape"]) or arr.dtype.name != node["dtype"]:
                self.fail(f"entry {key!r} has shape {list(arr.shape)} and dtype {arr.dtype}, "
                          f"but the manifest says shape {node['shape']} and dtype "
                          f"{node['dtype']}")
            self.cache[key] = arr
        elif kind in ("dict", "odict"):
            for k, v in node["items"]:
                self.check(k)
                self.check(v)
        elif kind in ("list", "tuple"):
            for v in node["items"]:
                self.check(v)
        elif kind == "ref":
            pass
        elif kind not in ("none", "bool", "int", "float", "str", "dtype"):
            self.fail(f"unknown manifest node {node!r}")

    def build(self, node, made):
        kind = node["type"]
        if kind == "none":
            return None
        if kind in ("bool", "int", "float", "str"):
            return node["value"]
        if kind == "dtype":
            return getattr(tg, node["value"])
        if kind == "ndarray":
            return self.cache[node["key"]]
        if kind == "tensor":
            t = tg.from_numpy(np.asarray(self.cache[node["key"]], order="C"))
            if node.get("parameter"):
                t = Parameter(t, requires_grad=node.get("requires_grad", True))
            elif node.get("requires_grad"):
                t.requires_grad_(True)
            made[node["key"]] = t
            return t
        if kind == "ref":
            if node["key"] not in made:
                self.fail(f"reference to {node['key']!r} before its tensor")
            return made[node["key"]]
        if kind in ("dict", "odict"):
            out = OrderedDict() if kind == "odict" else {}
            for k, v in node["items"]:
                out[self.build(k, made)] = self.build(v, made)
            return out
        items = [self.build(v, made) for v in node["items"]]
        return tuple(items) if kind == "tuple" else items


def load(f, map_location=None, *, weights_only=True, mmap=None):
    """Loads what ``tg.save`` wrote (``map_location`` and ``weights_only`` are accepted
    for PyTorch compatibility: everything is on the CPU and no code is ever loaded).

    A path that cannot be opened raises what ``open()`` raises (``FileNotFoundError``,
    ``IsADirectoryError``, ``PermissionError``). Anything wrong with the contents (not
    an ``.npz`` archive, truncated or corrupted, entries missing or of another shape or
    dtype than the manifest records) raises ``RuntimeError`` naming the file and the
    fault; nothing is returned then, so no state is ever partly loaded.
    """
    name = repr(os.fspath(f)) if not hasattr(f, "read") else "<file>"
    try:
        z = np.load(f, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _DAMAGED as exc:
        raise RuntimeError(f"tg.load({name}): not a tapegrad .npz file "
                           f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise RuntimeError(f"tg.load({name}): not a tapegrad .npz file (a single .npy array)")
    with z:
        try:
            return _read(z, name)
        except _DAMAGED as exc:
            raise RuntimeError(f"tg.load({name}): the file is damaged "
                               f"({type(exc).__name__}: {exc})") from exc


# What a truncated or corrupted archive raises while it is read.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


def _read(z, name):
    reader = _Reader(z, name)
    if MANIFEST not in reader.files:
        out = OrderedDict()
        for key in z.files:
            node = {"type": "tensor", "key": key}
            try:
                arr = z[key]
            except ValueError as exc:
                reader.fail(f"entry {key!r} cannot be read without pickle ({exc})")
            node.update(dtype=arr.dtype.name, shape=list(arr.shape))
            if arr.dtype.name not in _DTYPES:
                reader.fail(f"entry {key!r} has unsupported dtype {arr.dtype}")
            reader.cache[key] = arr
            out[key] = reader.build(node, {})
        return out
    try:
        manifest = json.loads(str(z[MANIFEST]))
    except (ValueError, TypeError) as exc:
        reader.fail(f"the manifest entry is not valid JSON ({exc})")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        reader.fail("the manifest entry is not a tapegrad manifest")
    if manifest.get("version", 0) > VERSION:
        reader.fail(f"written by a newer tapegrad (format version "
                    f"{manifest.get('version')}; this one reads up to {VERSION})")
    tree = manifest.get("tree")
    try:
        reader.check(tree)
    except (KeyError, TypeError) as exc:
        reader.fail(f"malformed manifest ({exc!r})")
    return reader.build(tree, {})
