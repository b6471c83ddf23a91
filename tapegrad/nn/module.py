"""nn.Module and the containers Sequential and ModuleList."""
import itertools
import operator
from collections import OrderedDict, namedtuple

import numpy as np
import tapegrad as tg

from .. import tape as _tape
from ..tensor import Tensor
from .parameter import Parameter

__all__ = ["Module", "Sequential", "ModuleList"]


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` returns: keys it did not find, keys it did not use."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


_TENSOR_TYPES = {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor",
                 "bool": "BoolTensor"}


def _typename(value):
    """PyTorch's name for the type of ``value`` (``tapegrad.FloatTensor``, ``int``)."""
    if isinstance(value, Tensor):
        return "tapegrad." + _TENSOR_TYPES.get(value.dtype.name, "Tensor")
    return type(value).__name__


def _addindent(s, n):
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    return lines[0] + "\n" + "\n".join(" " * n + line for line in lines[1:])


def _changed(module):
    """A parameter, buffer or submodule of ``module`` is (re)assigned: compiled functions
    re-check what they read, unless no recording has run since it was created."""
    if module.__dict__.get("_born", -1) < _tape.RECORDINGS[0]:
        _tape.STRUCTURE[0] += 1


class Module:
    """Base class of every layer and model, as ``torch.nn.Module``.

    Assigning a ``Parameter`` or a ``Module`` to an attribute registers it, so that
    ``parameters()``, ``state_dict()``, ``zero_grad()``, ``train()`` and ``eval()``
    reach it. Subclasses call ``super().__init__()`` first and define ``forward``.
    """
    training: bool

    def __init__(self):
        object.__setattr__(self, "_born", _tape.RECORDINGS[0])
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  f'"forward" function')

    def __call__(self, *args, **kwargs):
        if _tape.TRACE[0] is not None:
            _tape.TRACE[0].module(self, self.training)
        return self.forward(*args, **kwargs)

    # -- registration ----------------------------------------------------------
    def register_parameter(self, name, param):
        _changed(self)
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        self._check_name(name, "parameter", self._parameters)
        if param is None:
            self._parameters[name] = None
            return
        if not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{_typename(param)}' object to parameter "
                            f"'{name}' (tapegrad.nn.Parameter or None required)")
        if not param.is_leaf:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model "
                             "parameters must be created explicitly.")
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        _changed(self)
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        self._check_name(name, "buffer", self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{_typename(tensor)}' object to buffer '{name}' "
                            "(tapegrad Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        _changed(self)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_typename(module)} is not a Module subclass")
        if "_modules" not in self.__dict__:
            raise AttributeError("cannot assign module before Module.__init__() call")
        self._check_name(name, "module", self._modules)
        self._modules[name] = module

    register_module = add_module

    def _check_name(self, name, kind, own):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain "."')
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if hasattr(self, name) and name not in own:
            raise KeyError(f"attribute '{name}' already exists")

    def __setattr__(self, name, value):
        if isinstance(value, (Tensor, Module)):
            _changed(self)
        elif name == "training" and _tape.TRACE[0] is not None:
            _tape.TRACE[0].module(self, self.__dict__.get("training", value))
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._discard(name, d, self._buffers, self._modules)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{_typename(value)}' as parameter '{name}' "
                                "(tapegrad.nn.Parameter or None expected)")
            params[name] = None
        else:
            modules = d.get("_modules")
            if isinstance(value, Module):
                if modules is None:
                    raise AttributeError("cannot assign module before Module.__init__() call")
                self._discard(name, d, self._parameters, self._buffers)
                modules[name] = value
            elif modules is not None and name in modules:
                if value is not None:
                    raise TypeError(f"cannot assign '{_typename(value)}' as child module "
                                    f"'{name}' (tapegrad.nn.Module or None expected)")
                modules[name] = None
            else:
                buffers = d.get("_buffers")
                if buffers is not None and name in buffers:
                    if value is not None and not isinstance(value, Tensor):
                        raise TypeError(f"cannot assign '{_typename(value)}' as buffer "
                                        f"'{name}' (tapegrad Tensor or None expected)")
                    buffers[name] = value
                else:
                    object.__setattr__(self, name, value)

    def _discard(self, name, *dicts):
        for dd in dicts:
            if name in dd:
                del dd[name]
        self.__dict__.get("_non_persistent_buffers", set()).discard(name)

    def __getattr__(self, name):
        d = self.__dict__
        for kind in ("_parameters", "_buffers", "_modules"):
            own = d.get(kind)
            if own is not None and name in own:
                return own[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        _tape.STRUCTURE[0] += 1
        for kind in ("_parameters", "_buffers", "_modules"):
            own = self.__dict__.get(kind)
            if own is not None and name in own:
                del own[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = set(super().__dir__())
        for kind in ("_parameters", "_buffers", "_modules"):
            keys.update(self.__dict__.get(kind, ()))
        return sorted(k for k in keys if not k[0].isdigit())

    # -- traversal -------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, kind, prefix, recurse, remove_duplicate):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        for mod_prefix, module in mods:
            for name, value in module.__dict__[kind].items():
                if value is None or id(value) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(value))
                yield mod_prefix + ("." if mod_prefix else "") + name, value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target):
        mod = self
        if target == "":
            return mod
        for item in target.split("."):
            if item not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no attribute `{item}`")
            mod = mod._modules[item]
        return mod

    def get_parameter(self, target):
        path, _, name = target.rpartition(".")
        mod = self.get_submodule(path)
        if name not in mod._parameters:
            raise AttributeError(f"{type(mod).__name__} has no parameter `{name}`")
        return mod._parameters[name]

    def apply(self, fn):
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ---------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    @_tape.api
    def zero_grad(self, set_to_none=True):
        """Clears the gradients of this module's parameters (and of nothing else)."""
        zero_grads(self.parameters(), set_to_none)

    # -- dtype -----------------------------------------------------------------
    def _apply(self, fn):
        for module in self.children():
            module._apply(fn)
        for key, param in self._parameters.items():
            if param is not None:
                _replace_data(param, fn(param.detach()))
        for key, buf in self._buffers.items():
            if buf is not None:
                self._buffers[key] = fn(buf)
        return self

    def to(self, *args, dtype=None, device=None):
        """Converts floating parameters and buffers to ``dtype``; only the CPU exists."""
        for a in args:
            if isinstance(a, (tg.dtype, np.dtype, type)):
                dtype = a
            elif isinstance(a, Tensor):
                dtype = a.dtype
            else:
                device = a
        if device is not None and str(device) != "cpu":
            raise RuntimeError(f"tapegrad runs on the CPU only; got device {device!r}")
        if dtype is None:
            return self
        dt = dtype if isinstance(dtype, tg.dtype) else tg.zeros(0, dtype=dtype).dtype
        if not dt.is_floating_point:
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got "
                            f"desired dtype={dt}")
        return self._apply(lambda t: t.to(dt) if t.dtype.is_floating_point else t)

    def float(self):
        return self.to(tg.float32)

    def double(self):
        return self.to(tg.float64)

    def cpu(self):
        return self

    # -- state dicts -----------------------------------------------------------
    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """An ordered dict of every parameter and persistent buffer, by dotted name.

        Values share storage with the module (detached unless ``keep_vars``).
        """
        if args:   # the deprecated positional form (destination, prefix, keep_vars)
            destination = args[0]
            if len(args) > 1:
                prefix = args[1]
            if len(args) > 2:
                keep_vars = args[2]
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".",
                                  keep_vars=keep_vars)
        return destination

    def _state_slots(self, prefix=""):
        """(key, owning module, attribute name, kind) for every entry of state_dict()."""
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, self, name, "_parameters"
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                yield prefix + name, self, name, "_buffers"
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_slots(prefix + name + ".")

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copies parameters and buffers from ``state_dict`` into this module.

        All keys and shapes are checked before anything is copied: on an error
        (missing or unexpected keys with ``strict``, a size mismatch, a value that is
        not a tensor) the module is left unchanged, where PyTorch may have copied part
        of the state already. NumPy arrays are accepted as values.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"Expected state_dict to be dict-like, got "
                            f"{type(state_dict).__name__}.")
        slots = list(self._state_slots())
        expected = {key for key, *_ in slots}
        missing = [key for key, *_ in slots if key not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in expected]
        errors = []
        todo = []
        for key, module, name, kind in slots:
            if key not in state_dict:
                continue
            value = state_dict[key]
            if isinstance(value, np.ndarray):
                value = tg.from_numpy(np.asarray(value, order="C")) \
                    if value.dtype in (np.float32, np.float64, np.int64, np.bool_) \
                    else tg.tensor(value)
            if not isinstance(value, Tensor):
                errors.append(f'While copying the parameter named "{key}", expected '
                              f"Tensor or Tensor-like object from checkpoint but received "
                              f"{type(value)}")
                continue
            target = getattr(module, kind)[name]
            if tuple(value.shape) != tuple(target.shape):
                errors.append(f"size mismatch for {key}: copying a param with shape "
                              f"{value.shape} from checkpoint, the shape in current model "
                              f"is {target.shape}.")
                continue
            todo.append((module, name, kind, target, value))
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected)))
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in missing)))
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(errors)))
        with tg.no_grad():
            for module, name, kind, target, value in todo:
                if assign:
                    if kind == "_parameters":
                        new = value if isinstance(value, Parameter) else \
                            Parameter(value.detach(), target.requires_grad)
                        module._parameters[name] = new
                    else:
                        module._buffers[name] = value.detach()
                else:
                    target.copy_(value.detach())
        return _IncompatibleKeys(missing, unexpected)

    # -- printing --------------------------------------------------------------
    def extra_repr(self):
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({key}): " + _addindent(repr(module), 2)
                       for key, module in self._modules.items()]
        lines = extra_lines + child_lines
        main = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                main += extra_lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


def zero_grads(params, set_to_none):
    for p in params:
        if set_to_none:         # without reading .grad: nothing depends on what it was
            p.grad = None
            continue
        g = p.grad
        if g is None:
            continue
        else:
            if g.grad_fn is not None:
                g.detach_()
            else:
                g.requires_grad_(False)
            g.zero_()


def _replace_data(param, new):
    """param takes the values of ``new`` (another dtype maybe), keeping its identity."""
    req = param.requires_grad
    grad = param.grad
    param.grad = None
    param.data = new
    if new.dtype.is_floating_point:
        # Toggle requires_grad so that the leaf forgets any tape row recorded with the
        # old storage (the Tensor.data setter keeps it; reported to the core owner).
        param.requires_grad = not req
        param.requires_grad = req
    if grad is not None:
        param.grad = grad.to(new.dtype)


class _Container(Module):
    """A module holding numbered submodules: length, iteration and append."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self


class Sequential(_Container):
    """Modules applied one after the other; indexable (``net[0]``, ``net[1:]``)."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

    def _get_item_by_idx(self, iterator, idx):
        size = len(self)
        idx = operator.index(idx)
        if not -size <= idx < size:
            raise IndexError(f"index {idx} is out of range")
        idx %= size
        return next(itertools.islice(iterator, idx, None))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return self._get_item_by_idx(self._modules.values(), idx)

    def __setitem__(self, idx, module):
        key = self._get_item_by_idx(self._modules.keys(), idx)
        setattr(self, key, module)

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            for key in list(self._modules.keys())[idx]:
                delattr(self, key)
        else:
            delattr(self, self._get_item_by_idx(self._modules.keys(), idx))
        # renumber, as PyTorch does
        items = list(self._modules.values())
        self._modules.clear()
        for i, m in enumerate(items):
            self._modules[str(i)] = m

    def forward(self, input):
        for module in self:
            input = module(input)
        return input


class _Numbered:
    """List methods over one of a module's registries (``_store``), whose entries are
    named "0", "1", ..."""
    _store = None

    def __len__(self):
        return len(self.__dict__[self._store])

    def __iter__(self):
        return iter(self.__dict__[self._store].values())

    def _index(self, idx):
        idx = operator.index(idx)
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} is out of range")
        return str(idx % len(self))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self)[idx])
        return self.__dict__[self._store][self._index(idx)]

    def extend(self, values):
        for v in values:
            self.append(v)
        return self


class ModuleList(_Numbered, _Container):
    """A list of modules whose parameters are registered."""
    _store = "_modules"

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __setitem__(self, idx, module):
        setattr(self, self._index(idx), module)


def _pairs(items, kind):
    """(key, value) pairs of a mapping or of a sequence of pairs, as PyTorch's update()."""
    if hasattr(items, "keys"):
        return [(k, items[k]) for k in items.keys()]
    pairs = []
    for j, kv in enumerate(items):
        kv = tuple(kv)
        if len(kv) != 2:
            raise ValueError(f"{kind} update sequence element #{j} has length {len(kv)}; 2 "
                             "is required")
        pairs.append(kv)
    return pairs


class _Registry:
    """Dict methods over one of a module's registries (``_store``)."""
    _store = None

    def _entries(self):
        return self.__dict__[self._store]

    def __getitem__(self, key):
        return self._entries()[key]

    def __delitem__(self, key):
        _changed(self)
        del self._entries()[key]

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries())

    def __contains__(self, key):
        return key in self._entries()

    def keys(self):
        return self._entries().keys()

    def items(self):
        return self._entries().items()

    def values(self):
        return self._entries().values()

    def pop(self, key):
        value = self[key]
        del self[key]
        return value

    def clear(self):
        _changed(self)
        self._entries().clear()

    def update(self, entries):
        for key, value in _pairs(entries, type(self).__name__):
            self[key] = value


class ModuleDict(_Registry, Module):
    """Modules by name, registered in insertion order."""
    _store = "_modules"

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __setitem__(self, key, module):
        self.add_module(key, module)


def _listing(items):
    """PyTorch's extra_repr of a ParameterList or ParameterDict."""
    lines = []
    for k, p in items:
        if isinstance(p, Tensor):
            kind = "Parameter" if isinstance(p, Parameter) else "Tensor"
            size = "x".join(str(n) for n in p.shape)
            lines.append(f"  ({k}): {kind} containing: [{p.dtype} of size {size}]")
        else:
            lines.append(f"  ({k}): Object of type: {type(p).__name__}")
    return "\n".join(lines)


def _param(value):
    """A tensor becomes a Parameter (as PyTorch's ParameterList and ParameterDict)."""
    return value if isinstance(value, Parameter) or not isinstance(value, Tensor) \
        else Parameter(value)


class ParameterList(_Numbered, Module):
    """Parameters in a list, registered ("0", "1", ...)."""
    _store = "_parameters"

    def __init__(self, values=None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def __setitem__(self, idx, param):
        setattr(self, self._index(idx), _param(param))

    def append(self, value):
        setattr(self, str(len(self)), _param(value))
        return self

    def extra_repr(self):
        return _listing(enumerate(self))


class ParameterDict(_Registry, Module):
    """Parameters by name, registered in insertion order."""
    _store = "_parameters"

    def __init__(self, parameters=None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __setitem__(self, key, value):
        setattr(self, key, _param(value))

    def get(self, key, default=None):
        return self._parameters.get(key, default)

    def extra_repr(self):
        return _listing(self.items())
