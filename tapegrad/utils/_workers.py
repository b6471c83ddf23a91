"""DataLoader worker processes, as PyTorch's: each worker fetches and collates whole
batches; the loader hands them out in sampler order, ``prefetch_factor`` batches per
worker ahead. Each worker's tapegrad, NumPy and ``random`` streams are seeded with
``base_seed + worker_id`` (``base_seed`` drawn from the loader's generator or tapegrad's
stream), and ``get_worker_info()`` describes it inside the worker."""
import multiprocessing
import queue
import random
import traceback

import numpy as np
import tapegrad as tg

_POLL = 5.0       # seconds between checks that the workers are alive


class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker."""

    def __init__(self, id, num_workers, seed, dataset):
        self.id, self.num_workers, self.seed, self.dataset = id, num_workers, seed, dataset

    def __repr__(self):
        return (f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed}, "
                f"dataset={self.dataset!r})")


_INFO = [None]


def get_worker_info():
    """This worker's WorkerInfo inside a DataLoader worker, else None."""
    return _INFO[0]


class _Failure:
    """An exception raised in a worker, raised again in the main process."""

    def __init__(self, where, exc):
        self.type = type(exc)
        self.text = f"Caught {type(exc).__name__} {where}.\nOriginal " + \
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def reraise(self):
        try:
            err = self.type(self.text)
        except Exception:           # an exception type that wants other arguments
            err = RuntimeError(self.text)
        raise err


class _End:
    """A worker's IterableDataset copy has no more batches."""

    def __init__(self, worker_id):
        self.worker_id = worker_id


def _loop(fetch, dataset, index_q, result_q, worker_id, num_workers, seed, init_fn):
    tg.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)
    _INFO[0] = WorkerInfo(worker_id, num_workers, seed, dataset)
    init_error = None
    if init_fn is not None:
        try:
            init_fn(worker_id)
        except Exception as exc:
            init_error = _Failure(f"in DataLoader worker process {worker_id}", exc)
    while True:
        task = index_q.get()
        if task is None:
            return
        key, index = task
        if init_error is not None:
            result_q.put((key, init_error))
            continue
        try:
            data = fetch(index)
        except StopIteration:
            data = _End(worker_id)
        except Exception as exc:
            data = _Failure(f"in DataLoader worker process {worker_id}", exc)
        result_q.put((key, data))


class WorkerIterator:
    """Batches from ``loader.num_workers`` processes, in sampler order; for an
    IterableDataset, from each worker's copy in turn until every copy has ended."""

    def __init__(self, loader):
        self.loader = loader
        ctx = loader.multiprocessing_context
        if ctx is None or isinstance(ctx, str):
            ctx = multiprocessing.get_context(ctx)
        n = loader.num_workers
        base = loader._base_seed()
        self.index_qs = [ctx.Queue() for _ in range(n)]
        self.result_q = ctx.Queue()
        self.workers = []
        for w in range(n):
            p = ctx.Process(target=_loop, daemon=True,
                            args=(loader._stream or loader._fetcher, loader.dataset,
                                  self.index_qs[w],
                                  self.result_q, w, n, base + w, loader.worker_init_fn))
            p.start()
            self.workers.append(p)
        self.epoch = -1
        self._reset()

    def _reset(self):
        """A new pass over the sampler (persistent workers keep their processes)."""
        self.epoch += 1
        stream = self.loader._stream is not None
        self.indices = None if stream else iter(self.loader._index_sampler)
        self.active = list(range(len(self.workers))) if stream else None
        self.sent = self.received = 0
        self.ready = {}
        self.exhausted = False
        for _ in range(self.loader.num_workers * self.loader.prefetch_factor):
            self._send()

    def _send(self):
        if self.exhausted:
            return
        if self.active is not None:        # an IterableDataset: the next live copy
            if not self.active:
                self.exhausted = True
                return
            w, index = self.active[self.sent % len(self.active)], self.epoch
        else:
            try:
                index = next(self.indices)
            except StopIteration:
                self.exhausted = True
                return
            w = self.sent % len(self.workers)
        self.index_qs[w].put(((self.epoch, self.sent), index))
        self.sent += 1

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            if self.received == self.sent and self.exhausted:
                if not self.loader.persistent_workers:
                    self.shutdown()
                raise StopIteration
            while self.received not in self.ready:
                (epoch, i), data = self._get()
                if epoch == self.epoch:     # (results of an epoch left early are dropped)
                    self.ready[i] = data
            data = self.ready.pop(self.received)
            self.received += 1
            if isinstance(data, _End):
                if data.worker_id in self.active:
                    self.active.remove(data.worker_id)
                self._send()
                continue
            self._send()
            if isinstance(data, _Failure):
                self.shutdown()
                data.reraise()
            return data

    def _get(self):
        timeout = self.loader.timeout
        while True:
            try:
                return self.result_q.get(timeout=timeout if timeout > 0 else _POLL)
            except queue.Empty:
                if timeout > 0:
                    self.shutdown()
                    raise RuntimeError(f"DataLoader timed out after {timeout} seconds") \
                        from None
                dead = [p.pid for p in self.workers if not p.is_alive()]
                if dead:
                    self.shutdown()
                    raise RuntimeError(f"DataLoader worker (pid(s) "
                                       f"{', '.join(map(str, dead))}) exited unexpectedly") \
                        from None

    def __len__(self):
        return len(self.loader)

    def shutdown(self):
        workers, self.workers = self.workers, []
        for q in self.index_qs[:len(workers)]:
            q.put(None)
        for p in workers:
            p.join(timeout=_POLL)
            if p.is_alive():
                p.terminate()
        if self.loader._iterator is self:
            self.loader._iterator = None

    def __del__(self):
        try:
            self.shutdown()
        except Exception:   # interpreter shutdown: the queues may be gone already
            pass
