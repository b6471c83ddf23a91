"""tapegrad.autograd: backward(), grad(), and the legacy Variable."""
from ..creation import tensor
from ..tensor import Tensor
from .anomaly_mode import detect_anomaly, is_anomaly_enabled, set_detect_anomaly
from .engine import backward, grad
from ..tape import api as _api
from .function import Function, FunctionCtx
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .graph import AccumulateGrad, Node, RemovableHandle

backward, grad = _api(backward), _api(grad)


def __getattr__(name):
    """functional is imported on first use."""
    if name == "functional":
        import importlib
        value = importlib.import_module(".functional", __name__)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tapegrad.autograd' has no attribute {name!r}")


def Variable(data, requires_grad=False):
    """Legacy constructor: returns a tensor, as PyTorch does today."""
    if isinstance(data, Tensor):
        t = data.detach()
        if requires_grad:
            t.requires_grad = True
        return t
    return tensor(data, requires_grad=requires_grad)


__all__ = ["backward", "grad", "Variable", "Function", "FunctionCtx", "Node",
           "AccumulateGrad", "RemovableHandle", "detect_anomaly", "set_detect_anomaly",
           "is_anomaly_enabled", "functional", "gradcheck", "gradgradcheck", "GradcheckError"]
