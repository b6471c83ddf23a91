"""Guards of a tg.compile recording on the optimizers it stepped: their param_groups
(settings a replay may read anew, everything else fixed) and their state."""
from operator import is_ as _is

from .hyper import is_live_value


_MISSING = object()


_PLAIN = (int, float, bool, str, type(None))


class _Settings:
    """Guards an optimizer's param_groups as a recording saw them at its step: the
    group dicts, their parameter lists and every setting. A numeric setting of a live
    update may change (``check`` gives 1 until ``commit``); any other change gives -1."""

    def __init__(self, opt, live):
        self.opt = opt
        self.plist = opt.param_groups
        self.n = len(self.plist)
        self.groups = []
        for g in self.plist:
            keys = tuple(k for k in g if k != "params" and k != "param_names")
            vals = [g[k] for k in keys]
            lv = [live and is_live_value(v) for v in vals]
            self.groups.append((g, g["params"], len(g["params"]), len(g), keys, vals, lv))
        self.pending = []

    def check(self):
        plist = self.opt.param_groups
        if plist is not self.plist or len(plist) != self.n:
            return -1
        pending = self.pending = []
        for i, (g, params, npar, glen, keys, vals, lv) in enumerate(self.groups):
            if plist[i] is not g or g["params"] is not params or len(params) != npar \
                    or len(g) != glen:
                return -1
            if all(map(_is, map(g.get, keys), vals)):    # unchanged (the common case)
                continue
            for j, k in enumerate(keys):
                cur = g.get(k, _MISSING)
                old = vals[j]
                if cur is old:
                    continue
                if lv[j] and is_live_value(cur) and (cur.__class__ is not tuple or
                                                     len(cur) == len(old)):
                    pending.append((vals, j, cur))
                elif cur.__class__ is old.__class__ and cur.__class__ in _PLAIN \
                        and cur == old:
                    vals[j] = cur
                else:
                    return -1
        return 1 if pending else 0

    def commit(self):
        for vals, j, cur in self.pending:
            vals[j] = cur
        self.pending = []


def _state_sig(opt):
    # the values themselves, not their ids: an id can come back for another object
    return [(st, frozenset(st), tuple(st.values())) for st in opt.state.values()]


def _same_state(opt, sig):
    if len(opt.state) != len(sig):
        return False
    for st, keys, vals in sig:
        if len(st) != len(vals) or not all(map(_is, st.values(), vals)) or st.keys() != keys:
            return False
    return all(map(_is, (st for st, _, _ in sig), opt.state.values()))
