"""DataLoader with worker processes, as PyTorch's: the same batches in the same order as
in-process loading, seeded workers, get_worker_info and worker_init_fn, errors raised in
the main process, persistent workers, and PyTorch's argument errors."""
import os

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.utils.data import DataLoader, Dataset, TensorDataset, get_worker_info


class Samples(Dataset):
    """Dicts holding a tensor, a number and a string; index 13 fails when asked."""

    def __init__(self, n=40, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise ValueError(f"bad sample {i}")
        info = get_worker_info()
        return {"x": tg.full((3,), float(i)), "i": i, "name": f"s{i}",
                "worker": -1 if info is None else info.id, "pid": os.getpid(),
                "noise": tg.rand(1)}


def _batches(loader):
    return [(b["x"].numpy().tolist(), b["i"].tolist(), b["name"]) for b in loader]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_the_batches_of_in_process_loading(workers):
    want = _batches(DataLoader(Samples(), batch_size=6))
    loader = DataLoader(Samples(), batch_size=6, num_workers=workers)
    assert _batches(loader) == want
    assert _batches(loader) == want                 # a second epoch
    seen = {int(w) for b in loader for w in b["worker"]}
    assert seen == set(range(workers))
    assert len({int(p) for b in loader for p in b["pid"]} & {os.getpid()}) == 0


def test_shuffled_epochs_and_worker_streams_follow_the_seed():
    def run():
        tg.manual_seed(5)
        loader = DataLoader(Samples(), batch_size=4, shuffle=True, num_workers=2)
        return [(b["i"].tolist(), b["noise"].numpy().round(12).tolist()) for b in loader]
    first = run()
    assert run() == first
    assert sorted(i for idx, _ in first for i in idx) == list(range(40))
    noise = [v for _, n in first for v in sum(n, [])]
    assert len(set(noise)) == len(noise)          # workers draw from streams of their own


def test_get_worker_info_and_worker_init_fn():
    assert get_worker_info() is None

    class Info(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            info = get_worker_info()
            return tg.tensor([info.id, info.num_workers, info.seed, int(os.environ["TG_INIT"])])

    def init(worker_id):
        os.environ["TG_INIT"] = str(100 + worker_id)
    rows = [r.tolist() for b in DataLoader(Info(), batch_size=1, num_workers=2,
                                           worker_init_fn=init) for r in b]
    assert [r[0] for r in rows] == [0, 1, 0, 1] and {r[1] for r in rows} == {2}
    assert [r[3] for r in rows] == [100, 101, 100, 101]
    assert rows[1][2] == rows[0][2] + 1              # base seed + worker id


def test_an_error_in_a_worker_is_raised_in_the_main_process():
    loader = DataLoader(Samples(fail_at=13), batch_size=4, num_workers=2)
    with pytest.raises(ValueError, match="(?s)Caught ValueError in DataLoader worker process "
                                         "[01].*bad sample 13"):
        _batches(loader)
    assert len(_batches(DataLoader(Samples(), batch_size=4, num_workers=2))) == 10


def test_persistent_workers_keep_their_processes_and_epochs_restart():
    loader = DataLoader(Samples(), batch_size=5, num_workers=2, persistent_workers=True)
    pids = {int(p) for b in loader for p in b["pid"]}
    for b in loader:          # an epoch left early
        break
    assert _batches(loader) == _batches(DataLoader(Samples(), batch_size=5))
    assert {int(p) for b in loader for p in b["pid"]} == pids


def test_spawned_workers():
    ds = TensorDataset(tg.arange(12.0).reshape(6, 2), tg.arange(6))
    got = [(x.tolist(), y.tolist()) for x, y in
           DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")]
    assert got == [(x.tolist(), y.tolist()) for x, y in DataLoader(ds, batch_size=4)]


@pytest.mark.parametrize("kw, match", [
    (dict(num_workers=-1), "num_workers option should be non-negative"),
    (dict(prefetch_factor=2), "prefetch_factor option could only be specified"),
    (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
    (dict(timeout=-1), "timeout option should be non-negative"),
])
def test_bad_worker_options_raise_as_torch(kw, match, torch):
    with pytest.raises(ValueError, match=match):
        DataLoader(Samples(), **kw)
    with pytest.raises(ValueError, match=match):
        torch.utils.data.DataLoader(range(4), **kw)
    assert np.array_equal(next(iter(DataLoader(Samples(), pin_memory=True)))["i"].numpy(),
                          [0])


def _plain(batch):
    return batch.tolist() if hasattr(batch, "tolist") else batch


def _stream_classes(lib):
    class Count(lib.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(10))

    class Sharded(lib.utils.data.IterableDataset):
        """Each worker takes every num_workers-th sample (PyTorch's documented recipe)."""

        def __iter__(self):
            info = lib.utils.data.get_worker_info()
            w, n = (info.id, info.num_workers) if info is not None else (0, 1)
            return iter(range(w, 11, n))

        def __len__(self):
            return 11
    return Count, Sharded


@pytest.mark.parametrize("kw", [dict(batch_size=4), dict(batch_size=4, drop_last=True),
                                dict(batch_size=None), dict(batch_size=3, num_workers=2),
                                dict(batch_size=3, num_workers=2, persistent_workers=True)])
def test_iterable_datasets_batch_as_torch(kw, torch):
    import torch.utils.data  # noqa: F401
    for which in (0, 1):
        ours = _stream_classes(tg)[which]()
        theirs = _stream_classes(torch)[which]()
        loader = DataLoader(ours, **kw)
        want = [_plain(b) for b in torch.utils.data.DataLoader(theirs, **kw)]
        assert [_plain(b) for b in loader] == want
        assert [_plain(b) for b in loader] == want        # a second epoch
        if which == 1:
            assert len(loader) == len(torch.utils.data.DataLoader(theirs, **kw))


def test_iterable_dataset_options_and_chains_as_torch(torch):
    import torch.utils.data  # noqa: F401
    Count = _stream_classes(tg)[0]
    TCount = _stream_classes(torch)[0]
    for name, value in (("shuffle", True), ("sampler", [1, 2])):
        with pytest.raises(ValueError, match=f"expected unspecified {name} option"):
            DataLoader(Count(), **{name: value})
        with pytest.raises(ValueError, match=f"expected unspecified {name} option"):
            torch.utils.data.DataLoader(TCount(), **{name: value})
    chained = [b.tolist() for b in DataLoader(Count() + Count(), batch_size=8)]
    assert chained == [b.tolist() for b in
                       torch.utils.data.DataLoader(TCount() + TCount(), batch_size=8)]
    with pytest.raises(TypeError):
        len(DataLoader(Count()))
