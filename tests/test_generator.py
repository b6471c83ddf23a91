"""tg.Generator and the default stream's functions, as torch.Generator and torch.random:
draws that a seed fixes, streams independent of each other, saved and restored states,
PyTorch's errors, and every consumer of ``generator=`` (creation functions, nn.init,
random_split, DataLoader, compiled replays)."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.utils.data import DataLoader, TensorDataset, random_split


def _draws(g):
    return [tg.rand(3, generator=g).numpy(), tg.randn(2, 2, generator=g).numpy(),
            tg.randint(0, 100, (5,), generator=g).numpy(), tg.randperm(7, generator=g).numpy()]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_seed_fixes_the_draws_and_streams_are_independent():
    g = tg.Generator().manual_seed(5)
    first = _draws(g)
    tg.manual_seed(1)
    tg.randn(10)                         # the default stream moves; g's does not
    assert _same(_draws(g.manual_seed(5)), first)
    assert not _same(_draws(tg.Generator().manual_seed(6)), first)
    assert g.initial_seed() == 5 and g.device == "cpu"
    assert sorted(first[3].tolist()) == list(range(7)) and first[3].dtype == np.int64
    assert first[2].min() >= 0 and first[2].max() < 100


def test_manual_seed_returns_the_default_generator():
    g = tg.manual_seed(3)
    assert g is tg.default_generator and tg.initial_seed() == 3
    a = tg.randn(4).numpy()
    tg.default_generator.manual_seed(3)
    assert np.array_equal(tg.randn(4).numpy(), a)
    s = tg.seed()
    assert tg.initial_seed() == s and 0 <= s < 2 ** 64


def test_states_are_saved_and_restored():
    state = tg.get_rng_state()
    a = tg.rand(5).numpy()
    tg.set_rng_state(state)
    assert np.array_equal(tg.rand(5).numpy(), a)
    g = tg.Generator()
    st = g.get_state()
    b = tg.randn(3, generator=g).numpy()
    assert np.array_equal(tg.randn(3, generator=g.set_state(st)).numpy(), b)


def test_negative_seeds_read_as_unsigned_as_torch(torch):
    assert tg.Generator().manual_seed(-5).initial_seed() == \
        torch.Generator().manual_seed(-5).initial_seed()


@pytest.mark.parametrize("call", [
    lambda lib, g: lib.rand(2, generator=g),
    lambda lib, g: lib.randn(2, generator=g),
    lambda lib, g: lib.randint(0, 3, (2,), generator=g),
    lambda lib, g: lib.randperm(4, generator=g),
])
def test_a_generator_of_another_kind_is_a_type_error(call, torch):
    for lib in (tg, torch):
        with pytest.raises(TypeError):
            call(lib, np.random.default_rng(0))


def test_bad_seeds_and_states_raise_as_torch(torch):
    for lib in (tg, torch):
        g = lib.Generator()
        with pytest.raises(RuntimeError, match="manual_seed expected a long, but got str"):
            g.manual_seed("a")
        with pytest.raises(ValueError, match="Overflow when unpacking long"):
            g.manual_seed(2 ** 64)
        with pytest.raises(TypeError, match="RNG state must be"):
            lib.set_rng_state(lib.zeros(3))
        with pytest.raises(RuntimeError, match="negative dimension -1"):
            lib.randperm(-1)
    assert tg.randperm(0).shape == (0,)
    with pytest.raises(RuntimeError, match="CPU"):
        tg.Generator("cuda")


def test_nn_init_random_split_and_dataloader_take_a_generator():
    w = [tg.nn.init.kaiming_uniform_(tg.empty(3, 4), generator=tg.Generator().manual_seed(2))
         for _ in range(2)]
    assert np.array_equal(w[0].detach().numpy(), w[1].detach().numpy())
    ds = TensorDataset(tg.arange(20.0))
    splits = [[list(s.indices) for s in
               random_split(ds, [15, 5], generator=tg.Generator().manual_seed(1))]
              for _ in range(2)]
    assert splits[0] == splits[1] and sorted(sum(splits[0], [])) == list(range(20))
    g = tg.Generator().manual_seed(9)
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=g)
    first = [x.tolist() for (x,) in loader]
    g.manual_seed(9)
    assert [x.tolist() for (x,) in loader] == first


def test_compiled_replays_continue_a_generators_stream():
    g = tg.Generator().manual_seed(4)
    noisy = tg.compile(lambda x: x + tg.randn(3, generator=g) * tg.rand(3, generator=g))
    x = tg.zeros(3)
    got = [noisy(x).numpy().copy() for _ in range(4)]
    g.manual_seed(4)
    want = [(x + tg.randn(3, generator=g) * tg.rand(3, generator=g)).numpy()
            for _ in range(4)]
    assert np.array_equal(np.array(got), np.array(want))
    assert noisy.records == 1 and noisy.replays == 3


def test_nearby_seeds_start_unrelated_streams():
    """Seeds one apart (a worker or a process each) must not give one stream shifted by
    a draw: no number of one appears in the other."""
    draws = []
    for s in (1, 2, 3):
        tg.manual_seed(s)
        draws.append(set(tg.rand(2000, dtype=tg.float64).tolist()))
    assert not (draws[0] & draws[1]) and not (draws[1] & draws[2])
