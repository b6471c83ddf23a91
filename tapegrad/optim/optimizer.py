"""The Optimizer base class: parameter groups, per-parameter state, state dicts."""
import functools
import warnings
from collections import defaultdict
from itertools import chain

import numpy as np
import tapegrad as tg
from ..nn.module import zero_grads

from .. import tape as _tape
from ..tensor import Tensor

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    """Marks a hyper-parameter that has no default."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _clone_state(value, param=None, key=None):
    """A private copy of a loaded state value; floating tensors take the param's dtype."""
    if isinstance(value, Tensor):
        t = value.detach()
        if param is not None and key != "step" and t.dtype.is_floating_point and \
                param.dtype.is_floating_point:
            t = t.to(param.dtype)
        return t.clone()
    if isinstance(value, np.ndarray):
        return _clone_state(tg.tensor(value), param, key)
    if isinstance(value, dict):
        return {k: _clone_state(v, param, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_state(v, param, key) for v in value)
    return value


_SETTING_NAMES = {"lr": "learning rate", "eps": "epsilon value"}


def check_nonnegative(**settings):
    """ValueError naming the first setting that is negative (or NaN), in PyTorch's words."""
    for name, value in settings.items():
        if not 0.0 <= value:
            raise ValueError(f"Invalid {_SETTING_NAMES.get(name, name + ' value')}: {value}")


def check_betas(betas):
    for i, b in enumerate(betas):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {b}")


def implementation(differentiable=False, **flags):
    """PyTorch's implementation choices (foreach, fused, capturable) as param_group
    entries: one implementation here, the single-tensor path, so they change nothing.
    ``differentiable=True`` (autograd through the step) is not supported."""
    if differentiable:
        raise NotImplementedError("differentiable=True: tapegrad's optimizer steps are not "
                                  "differentiable")
    return {**flags, "differentiable": False}


def _live_update(cls):
    """True when the update ``cls`` runs is one of tapegrad's own (``_live``): it uses
    its settings only through arithmetic and comparisons, so a compiled replay may
    recompute what it derived from them."""
    for c in cls.__mro__:
        if "_live" in c.__dict__:
            return c.__dict__["_live"]
        if "step" in c.__dict__ or "_update_group" in c.__dict__:
            return False
    return False


class Optimizer:
    """Base class of the optimizers, with PyTorch's interface.

    ``param_groups`` is a list of dicts, each holding ``params`` and its
    hyper-parameters; ``state`` maps a parameter to a dict of tensors. ``step`` runs
    under ``no_grad`` and updates the parameters in place.
    """

    _live = False

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(dict(group))

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group.keys()):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    def add_param_group(self, param_group):
        """Adds a group of parameters (a dict with ``params``) with its own settings."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got "
                            f"{type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered "
                            "collections, but the ordering of tensors in sets will change "
                            "between runs. Please use a list instead.")
        else:
            params = list(params)
        if params and all(isinstance(p, tuple) and len(p) == 2 for p in params):
            param_group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        param_group["params"] = params
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params "
                                f"is {type(p).__name__}")
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            param_group.setdefault(name, default)
        if len(params) != len({id(p) for p in params}):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error", stacklevel=3)
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    @_tape.api
    def zero_grad(self, set_to_none=True):
        """Clears the gradients of the optimized parameters (and of nothing else)."""
        for group in self.param_groups:
            zero_grads(group["params"], set_to_none)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None:
            # a step written elsewhere still tells a tg.compile recording which
            # optimizer it updates, so that its settings are guarded
            @_tape.api
            @functools.wraps(step)
            def registered(self, *args, **kwargs):
                if _tape.TRACE[0] is not None:
                    _tape.TRACE[0].optimizer(self)
                return step(self, *args, **kwargs)
            cls.step = registered

    @_tape.api
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure()'s loss."""
        groups = self.param_groups
        if _tape.TRACE[0] is not None:
            groups = _tape.TRACE[0].optimizer(self, _live_update(type(self))) or groups
        loss = None
        if closure is not None:
            with tg.enable_grad():
                loss = closure()
        with tg.no_grad():
            for group in groups:
                self._update_group(group)
        return loss

    def _update_group(self, group):
        raise NotImplementedError

    @staticmethod
    def _with_grads(group):
        """(parameter, its gradient, negated under ``maximize``) for each parameter of
        the group that has a gradient."""
        for p in group["params"]:
            if p.grad is not None:
                yield p, (-p.grad if group["maximize"] else p.grad)

    # -- state dicts -------------------------------------------------------------
    def state_dict(self):
        """{'state': {index: {name: tensor}}, 'param_groups': [{..., 'params': [index]}]}.

        As in PyTorch, the state tensors are the optimizer's own (not copies) and
        parameters are referred to by their position across the groups.
        """
        mapping = {}
        start = 0

        def pack(group):
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        param_groups = [pack(g) for g in self.param_groups]
        state = {(mapping[id(k)] if isinstance(k, Tensor) else k): v
                 for k, v in self.state.items()}
        return {"state": state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Loads a state dict from ``state_dict()`` (or ``tg.load`` of a saved one).

        Checked before anything changes; the loaded tensors are copied (floating ones
        cast to their parameter's dtype, except ``step``).
        """
        if "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("optimizer state dict must have the keys 'state' and "
                             "'param_groups'")
        groups = self.param_groups
        saved_groups = list(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        state = defaultdict(dict)
        for k, v in state_dict["state"].items():
            key = int(k) if isinstance(k, (str, np.integer)) and str(k).isdigit() else k
            if key in id_map:
                param = id_map[key]
                state[param] = _clone_state(v, param)
            else:
                state[key] = _clone_state(v)
        new_groups = []
        for group, saved in zip(groups, saved_groups):
            ng = {k: _clone_state(v) for k, v in saved.items() if k not in ("params",)}
            if "betas" in ng and isinstance(ng["betas"], list):
                ng["betas"] = tuple(ng["betas"])
            ng["params"] = group["params"]
            if "param_names" in group and "param_names" not in ng:
                ng["param_names"] = group["param_names"]
            new_groups.append(ng)
        self.state = state
        self.param_groups = new_groups
