"""tapegrad.utils.data: datasets, samplers, collation and DataLoader, with
torch.utils.data as the oracle where the two must agree."""
import collections
import warnings

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn as nn
import tapegrad.optim as optim
from tapegrad.utils.data import (BatchSampler, ConcatDataset, DataLoader, Dataset,
                                 RandomSampler, SequentialSampler, Subset,
                                 SubsetRandomSampler, TensorDataset, default_collate,
                                 default_convert, random_split)


def rows_dataset(n=10):
    x = tg.arange(2 * n, dtype=tg.float32).reshape(n, 2)
    y = tg.arange(n)
    return x, y, TensorDataset(x, y)


def order(loader):
    """The dataset indices in the order one epoch of ``loader`` gives them (y == index)."""
    return [int(i) for _, yb in loader for i in yb.tolist()]


# ---------------------------------------------------------------------------- datasets

def test_tensor_dataset_items():
    x, y, ds = rows_dataset(5)
    assert len(ds) == 5
    xi, yi = ds[3]
    assert xi.tolist() == [6.0, 7.0] and yi.item() == 3
    assert ds[-1][1].item() == 4
    assert ds.tensors[0] is x and ds.tensors[1] is y


def test_tensor_dataset_size_mismatch():
    with pytest.raises(AssertionError, match="Size mismatch between tensors"):
        TensorDataset(tg.zeros(4, 2), tg.zeros(5))


def test_dataset_base_and_add():
    with pytest.raises(NotImplementedError,
                       match="Subclasses of Dataset should implement __getitem__"):
        Dataset()[0]
    _, _, a = rows_dataset(3)
    _, _, b = rows_dataset(2)
    both = a + b
    assert isinstance(both, ConcatDataset)
    assert len(both) == 5
    assert [both[i][1].item() for i in range(5)] == [0, 1, 2, 0, 1]


def test_concat_dataset_indexing():
    c = ConcatDataset([range(3), [], range(10, 14)])
    assert c.cumulative_sizes == [3, 3, 7]
    assert len(c) == 7
    assert [c[i] for i in range(7)] == [0, 1, 2, 10, 11, 12, 13]
    assert [c[-i] for i in range(1, 8)] == [13, 12, 11, 10, 2, 1, 0]
    with pytest.raises(ValueError,
                       match="absolute value of index should not exceed dataset length"):
        c[-8]
    with pytest.raises(IndexError):
        c[7]
    with pytest.raises(AssertionError, match="datasets should not be an empty iterable"):
        ConcatDataset([])


def test_subset_indexing():
    s = Subset(list(range(100, 110)), [3, 5, 7])
    assert len(s) == 3
    assert [s[0], s[1], s[2]] == [103, 105, 107]
    assert s[-1] == 107 and s[-3] == 103
    _, _, ds = rows_dataset(10)
    sub = Subset(ds, [9, 0, 4])
    xb, yb = sub[[0, 2]]
    assert yb.tolist() == [9, 4] and xb.tolist() == [[18.0, 19.0], [8.0, 9.0]]
    assert [b[1].tolist() for b in DataLoader(sub, batch_size=2)] == [[9, 0], [4]]


# ---------------------------------------------------------------------------- loading

def test_loader_batches_and_len():
    x, y, ds = rows_dataset(10)
    loader = DataLoader(ds, batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert len(batches) == 3
    assert [tuple(xb.shape) for xb, _ in batches] == [(4, 2), (4, 2), (2, 2)]
    for k, (xb, yb) in enumerate(batches):
        assert isinstance(batches[k], list)
        assert xb.dtype == tg.float32 and yb.dtype == tg.int64
        np.testing.assert_array_equal(xb.numpy(), x.numpy()[4 * k:4 * k + 4])
        np.testing.assert_array_equal(yb.numpy(), y.numpy()[4 * k:4 * k + 4])
    assert list(loader)[2][1].tolist() == [8, 9]       # a second epoch, same order


def test_loader_drop_last():
    _, _, ds = rows_dataset(10)
    loader = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [yb.tolist() for _, yb in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    exact = DataLoader(ds, batch_size=5, drop_last=True)
    assert len(exact) == 2 and len(list(exact)) == 2


def test_loader_default_batch_size_one():
    _, _, ds = rows_dataset(3)
    batches = list(DataLoader(ds))
    assert len(batches) == 3
    assert tuple(batches[1][0].shape) == (1, 2) and batches[1][1].tolist() == [1]


def test_loader_without_batching():
    _, _, ds = rows_dataset(4)
    loader = DataLoader(ds, batch_size=None)
    assert len(loader) == 4
    items = list(loader)
    assert [tuple(xi.shape) for xi, _ in items] == [(2,)] * 4
    assert [yi.item() for _, yi in items] == [0, 1, 2, 3]
    arrays = [np.full(3, i, np.float64) for i in range(3)]
    out = list(DataLoader(arrays, batch_size=None))
    assert all(isinstance(t, tg.Tensor) and t.dtype == tg.float64 for t in out)
    assert out[2].tolist() == [2.0, 2.0, 2.0]


def test_loader_custom_sampler_batch_sampler_and_collate():
    _, _, ds = rows_dataset(6)
    got = [yb.tolist() for _, yb in DataLoader(ds, batch_size=2, sampler=[5, 1, 3, 0])]
    assert got == [[5, 1], [3, 0]]
    loader = DataLoader(ds, batch_sampler=[[4, 2], [0], [1, 3, 5]])
    assert loader.batch_size is None and len(loader) == 3
    assert [yb.tolist() for _, yb in loader] == [[4, 2], [0], [1, 3, 5]]
    loader = DataLoader(range(7), batch_size=3, collate_fn=lambda b: sum(b))
    assert list(loader) == [3, 12, 6]


def test_loader_uses_getitems():
    class Batched(Dataset):
        calls = []

        def __getitem__(self, i):
            raise AssertionError("__getitems__ should be used")

        def __getitems__(self, indices):
            self.calls.append(list(indices))
            return [float(i) for i in indices]

        def __len__(self):
            return 5

    out = list(DataLoader(Batched(), batch_size=2))
    assert Batched.calls == [[0, 1], [2, 3], [4]]
    assert out[1].dtype == tg.float64 and out[1].tolist() == [2.0, 3.0]


def test_loader_dict_samples():
    class Dicts(Dataset):
        def __getitem__(self, i):
            return {"x": np.array([i, -i], np.float32), "label": i % 2, "name": f"s{i}"}

        def __len__(self):
            return 5

    b = next(iter(DataLoader(Dicts(), batch_size=3)))
    assert set(b) == {"x", "label", "name"}
    assert b["x"].dtype == tg.float32 and b["x"].tolist() == [[0, 0], [1, -1], [2, -2]]
    assert b["label"].dtype == tg.int64 and b["label"].tolist() == [0, 1, 0]
    assert b["name"] == ["s0", "s1", "s2"]


# ---------------------------------------------------------------------------- shuffling

def test_shuffle_covers_each_index_once_and_reproducible():
    _, _, ds = rows_dataset(50)
    loader = DataLoader(ds, batch_size=7, shuffle=True)
    assert len(loader) == 8
    tg.manual_seed(3)
    first, second = order(loader), order(loader)
    for epoch in (first, second):
        assert sorted(epoch) == list(range(50))
    assert first != list(range(50))
    assert first != second
    tg.manual_seed(3)
    assert order(loader) == first and order(loader) == second
    tg.manual_seed(4)
    assert order(loader) != first


def test_shuffle_drop_last_keeps_distinct_indices():
    _, _, ds = rows_dataset(23)
    tg.manual_seed(0)
    loader = DataLoader(ds, batch_size=5, shuffle=True, drop_last=True)
    got = order(loader)
    assert len(loader) == 4 and len(got) == 20 and len(set(got)) == 20


def test_shuffle_with_numpy_generator():
    _, _, ds = rows_dataset(30)
    a = DataLoader(ds, batch_size=4, shuffle=True, generator=np.random.default_rng(7))
    b = DataLoader(ds, batch_size=4, shuffle=True, generator=np.random.default_rng(7))
    tg.manual_seed(1)
    ea = [order(a), order(a)]
    tg.manual_seed(2)                     # the generator alone decides the order
    eb = [order(b), order(b)]
    assert ea == eb
    assert ea[0] != ea[1]
    assert sorted(ea[0]) == list(range(30))
    g = tg.Generator().manual_seed(11)       # as torch.Generator
    c = DataLoader(ds, batch_size=4, shuffle=True, generator=g)
    first = order(c)
    tg.manual_seed(3)                         # the default stream does not matter
    assert order(c) != first and sorted(first) == list(range(30))
    g.manual_seed(11)
    assert order(c) == first


def test_random_sampler_is_uniform():
    """Where index 0 lands over many epochs: uniform over the 5 positions (chi-square)."""
    tg.manual_seed(0)
    sampler = RandomSampler(range(5))
    counts = np.zeros(5)
    epochs = 3000
    for _ in range(epochs):
        counts[list(sampler).index(0)] += 1
    expected = epochs / 5
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 18.47                  # p = 0.001 with 4 degrees of freedom


def test_random_sampler_options():
    tg.manual_seed(0)
    s = RandomSampler(range(4), num_samples=10)
    got = list(s)
    assert len(s) == 10 and len(got) == 10
    assert sorted(got[:8]) == [0, 0, 1, 1, 2, 2, 3, 3]
    r = RandomSampler(range(3), replacement=True, num_samples=200)
    drawn = list(r)
    assert len(drawn) == 200 and set(drawn) == {0, 1, 2}
    with pytest.raises(ValueError, match="num_samples should be a positive integer value, "
                                         "but got num_samples=0"):
        RandomSampler([])
    with pytest.raises(TypeError, match="replacement should be a boolean value"):
        RandomSampler(range(3), replacement=1)
    with pytest.raises(ValueError, match="sampler option is mutually exclusive"):
        DataLoader(range(3), sampler=SequentialSampler(range(3)), shuffle=True)


def test_subset_random_sampler():
    tg.manual_seed(5)
    s = SubsetRandomSampler([10, 20, 30, 40])
    a, b = list(s), list(s)
    assert len(s) == 4 and sorted(a) == sorted(b) == [10, 20, 30, 40]
    tg.manual_seed(5)
    assert list(s) == a


def test_batch_sampler():
    seq = SequentialSampler(range(10))
    assert list(BatchSampler(seq, 3, False)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert list(BatchSampler(seq, 3, True)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(BatchSampler(seq, 3, False)) == 4 and len(BatchSampler(seq, 3, True)) == 3
    assert list(BatchSampler(range(4), 2, False)) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="drop_last should be a boolean value, but got "
                                         "drop_last=1"):
        BatchSampler(seq, 3, 1)


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", [0, -2, 2.0, True])
def test_batch_size_errors(bad):
    with pytest.raises(ValueError, match=f"batch_size should be a positive integer value, "
                                         f"but got batch_size={bad}"):
        DataLoader(range(4), batch_size=bad)


def test_loader_option_errors():
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive with "
                                         "batch_size, shuffle, sampler, and drop_last"):
        DataLoader(range(4), batch_size=2, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(range(4), shuffle=True, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="batch_size=None option disables auto-batching "
                                         "and is mutually exclusive with drop_last"):
        DataLoader(range(4), batch_size=None, drop_last=True)


def test_collate_errors():
    with pytest.raises(RuntimeError,
                       match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="default_collate: batch must contain tensors, "
                                        "numpy arrays, numbers, dicts or lists; found"):
        default_collate([object(), object()])
    with pytest.raises(TypeError, match="found <U1"):
        default_collate([np.array(["a"]), np.array(["b"])])


# ---------------------------------------------------------------------- collate vs torch

class T:
    """A tensor in a sample spec: built as a tapegrad or a torch tensor."""

    def __init__(self, data, dtype):
        self.data, self.dtype = np.asarray(data), dtype


Point = collections.namedtuple("Point", ["x", "y"])


def build(spec, make):
    if isinstance(spec, T):
        return make(spec)
    if isinstance(spec, dict):
        return {k: build(v, make) for k, v in spec.items()}
    if isinstance(spec, Point):
        return Point(*(build(v, make) for v in spec))
    if isinstance(spec, (list, tuple)):
        return type(spec)(build(v, make) for v in spec)
    return spec


def assert_same(ours, ref, torch):
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, tg.Tensor), type(ours)
        assert str(ours.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
        assert tuple(ours.shape) == tuple(ref.shape)
        np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    elif isinstance(ref, dict):
        assert type(ours) is type(ref) and list(ours) == list(ref)
        for k in ref:
            assert_same(ours[k], ref[k], torch)
    elif isinstance(ref, (list, tuple)):
        assert type(ours) is type(ref) and len(ours) == len(ref)
        for a, b in zip(ours, ref):
            assert_same(a, b, torch)
    else:
        assert type(ours) is type(ref) and ours == ref


BATCHES = {
    "ints": [3, -1, 7],
    "floats": [0.5, 2.0, -3.25],
    "bools": [True, False, True],
    "strings": ["a", "bc"],
    "np_scalars_f32": [np.float32(1.5), np.float32(-2.0)],
    "np_scalars_f64": [np.float64(1.5), np.float64(2.5)],
    "np_scalars_i64": [np.int64(4), np.int64(5)],
    "np_arrays": [np.arange(6.0).reshape(2, 3), np.ones((2, 3))],
    "np_arrays_f32": [np.arange(3, dtype=np.float32), np.arange(3, 6, dtype=np.float32)],
    "np_arrays_int64": [np.array([1, 2]), np.array([3, 4])],
    "tensors": [T([1.0, 2.0], "float32"), T([3.0, 4.0], "float32")],
    "tensors_f64_2d": [T(np.eye(2), "float64"), T(np.ones((2, 2)), "float64")],
    "tensors_int": [T(5, "int64"), T(6, "int64")],
    "tuples": [(1, 0.5, "x", np.array([1.0, 2.0])), (2, 1.5, "y", np.array([3.0, 4.0]))],
    "lists": [[1, 2.0], [3, 4.0]],
    "dicts": [{"a": 1, "b": [0.5, T([1, 2], "int64")], "c": "p"},
              {"a": 2, "b": [1.5, T([3, 4], "int64")], "c": "q"}],
    "nested": [((T([1.0], "float32"), {"k": np.float32(2.0)}), 3),
               ((T([4.0], "float32"), {"k": np.float32(5.0)}), 6)],
    "namedtuples": [Point(1, 2.0), Point(3, 4.0)],
}


@pytest.mark.parametrize("name", sorted(BATCHES))
def test_default_collate_matches_torch(name):
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as torch_collate
    spec = BATCHES[name]
    ours = default_collate(build(spec, lambda t: tg.tensor(t.data,
                                                          dtype=getattr(tg, t.dtype))))
    ref = torch_collate(build(spec, lambda t: torch.tensor(t.data,
                                                           dtype=getattr(torch, t.dtype))))
    assert_same(ours, ref, torch)


@pytest.mark.parametrize("name", ["np_arrays", "tuples", "dicts", "np_scalars_f32", "ints"])
def test_default_convert_matches_torch(name):
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_convert as torch_convert
    for sample in BATCHES[name]:
        assert_same(default_convert(build(sample, lambda t: tg.tensor(t.data))),
                    torch_convert(build(sample, lambda t: torch.tensor(t.data))), torch)


def test_default_collate_dtypes_without_torch():
    out = default_collate([(1, 2.5, np.ones(1, np.float32)),
                           (2, 3.5, np.zeros(1, np.float32))])
    assert isinstance(out, list)
    assert out[0].dtype == tg.int64 and out[0].tolist() == [1, 2]
    assert out[1].dtype == tg.float64 and out[1].tolist() == [2.5, 3.5]
    assert out[2].dtype == tg.float32 and out[2].tolist() == [[1.0], [0.0]]
    stacked = default_collate([tg.ones(2, 3), tg.zeros(2, 3)])
    assert tuple(stacked.shape) == (2, 2, 3) and stacked.sum().item() == 6.0


# ---------------------------------------------------------------------------- random_split

FRACTIONS = [[0.5, 0.5], [0.3, 0.3, 0.4], [0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3],
             [0.25, 0.25, 0.25, 0.25], [0.9, 0.1]]
SIZES = [1, 2, 7, 10, 13, 100, 101]


def split_lengths(split, n, lengths, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [len(s) for s in split(range(n), lengths, **kw)]


def test_random_split_fraction_lengths():
    # floor each, then the remainder one by one from the first split on
    assert split_lengths(random_split, 10, [0.33, 0.33, 0.34]) == [4, 3, 3]
    assert split_lengths(random_split, 7, [0.5, 0.5]) == [4, 3]
    assert split_lengths(random_split, 101, [0.25] * 4) == [26, 25, 25, 25]
    assert split_lengths(random_split, 2, [0.1, 0.2, 0.7]) == [1, 0, 1]


@pytest.mark.parametrize("n", SIZES)
def test_random_split_lengths_match_torch(n):
    torch = pytest.importorskip("torch")
    for fracs in FRACTIONS:
        assert (split_lengths(random_split, n, fracs)
                == split_lengths(torch.utils.data.random_split, n, fracs)), fracs
    ints = [n // 3, n - n // 3]
    assert split_lengths(random_split, n, ints) == ints


@pytest.mark.parametrize("lengths", [[3, 7], [0.3, 0.3, 0.4], [1, 2, 3, 4]])
def test_random_split_disjoint_and_covering(lengths):
    tg.manual_seed(0)
    parts = random_split(range(100, 110), lengths)
    items = [x for p in parts for x in (p[i] for i in range(len(p)))]
    assert sorted(items) == list(range(100, 110))
    assert all(isinstance(p, Subset) for p in parts)
    assert items != list(range(100, 110))


def test_random_split_reproducible():
    tg.manual_seed(9)
    a = [p.indices for p in random_split(range(20), [5, 15])]
    tg.manual_seed(9)
    b = [p.indices for p in random_split(range(20), [5, 15])]
    c = [p.indices for p in random_split(range(20), [5, 15])]
    assert a == b and a != c
    g1 = [p.indices for p in random_split(range(20), [0.5, 0.5],
                                          generator=np.random.default_rng(1))]
    g2 = [p.indices for p in random_split(range(20), [0.5, 0.5],
                                          generator=np.random.default_rng(1))]
    assert g1 == g2


def test_random_split_errors_and_warning():
    with pytest.raises(ValueError, match="Sum of input lengths does not equal the length "
                                         "of the input dataset!"):
        random_split(range(10), [3, 3])
    with pytest.raises(ValueError, match="Sum of input lengths does not equal"):
        random_split(range(10), [0.5, 0.6])
    with pytest.raises(ValueError, match="Fraction at index 1 is not between 0 and 1"):
        random_split(range(10), [0.5, 1.5, -1.0])
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(range(2), [0.1, 0.2, 0.7])


# ---------------------------------------------------------------------------- training

def test_training_loop_loss_decreases():
    tg.manual_seed(0)
    n = 64
    x = tg.randn(n, 3)
    w = tg.tensor([[1.5], [-2.0], [0.5]])
    y = x @ w + 0.3
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    model = nn.Linear(3, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.MSELoss()

    def full_loss():
        with tg.no_grad():
            return loss_fn(model(x), y).item()

    losses = [full_loss()]
    for _ in range(2):
        seen = 0
        for xb, yb in loader:
            assert tuple(xb.shape) == (8, 3) and tuple(yb.shape) == (8, 1)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            seen += xb.shape[0]
        assert seen == n
        losses.append(full_loss())
    assert losses[1] < losses[0] and losses[2] < losses[1]
    assert losses[2] < 0.1 * losses[0]
