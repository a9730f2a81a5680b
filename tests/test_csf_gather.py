"""The cross-worker loss: two gloo processes give the gradient of the one global-batch loss."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from csf.loss import contrastive_loss


def _data():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 10, generator=g)
    x1, x2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    return weight, x1, x2


#: places of the 8 samples: samples 2 (worker 0) and 6 (worker 1) share one, as do 3 and 4 (worker 0)
PLACES = [0, 1, 2, 3, 3, 4, 2, 5]


def _worker(rank: int, world: int, port: int, queue, places: list[int] | None) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        weight, x1, x2 = _data()
        weight.requires_grad_(True)
        part = slice(rank * 4, rank * 4 + 4)
        local = None if places is None else torch.tensor(places[part])
        loss, to_backward = contrastive_loss([x1[part] @ weight], [x2[part] @ weight], places=local)
        to_backward.backward()
        dist.all_reduce(weight.grad)  # what DDP does: average the workers' gradients
        weight.grad /= world
        # by value: a tensor would travel as a shared file descriptor, gone if this process exits first
        queue.put((rank, loss.item(), weight.grad.numpy().copy()))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("places", [None, PLACES], ids=["every-negative", "own-places-left-out"])
def test_gathered_loss_and_gradient_equal_the_global_batch(places):
    weight, x1, x2 = _data()
    weight.requires_grad_(True)
    everywhere = None if places is None else torch.tensor(places)
    expected, _ = contrastive_loss([x1 @ weight], [x2 @ weight], places=everywhere)
    expected.backward()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as probe:  # a port nobody holds now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue, places)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for _, loss, grad in results:
        assert abs(loss - expected.item()) < 1e-5
        assert torch.allclose(torch.from_numpy(grad), weight.grad, atol=1e-5)
