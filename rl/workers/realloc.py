"""Ray actors that hold one rank's shards of a model and reshard them with torch.distributed.

Each actor joins a gloo group through a TCP store on 127.0.0.1; `reshard` runs the plan from
`rollout.realloc.reshard` on every rank at once. Used by `rl bench plan` and the reshard tests.

Example:
    workers = start_reshard_workers("tiny-llama", Layout(dp=2, zero=True), world_size=2)
    stats = ray.get([w.reshard.remote(Layout(tp=2)) for w in workers])
"""
from __future__ import annotations

import socket

import ray
import torch

from rollout.realloc.layout import Layout, ModelSpec
from rollout.realloc.reshard import execute_reshard, layout_boxes, plan_reshard, shard_state_dict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def full_params(model) -> dict[str, torch.Tensor]:
    """Unique parameters by name (a tied lm_head appears once, as the embedding)."""
    return {n: p.detach() for n, p in model.named_parameters()}


@ray.remote(num_cpus=0)
class ReshardWorker:
    """One rank: builds the model, keeps only its shards of `layout`, reshards on request."""

    def __init__(self, rank: int, world_size: int, port: int):
        import torch.distributed as dist

        torch.set_num_threads(1)
        self.rank, self.world_size = rank, world_size
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size)
        self.shards, self.layout, self.spec, self.shapes = {}, None, None, {}

    def load(self, model_name: str, layout: Layout, seed: int = 0) -> int:
        """Build the model here (seeded: every rank builds the same weights), keep our shards."""
        from rl.workers.models import load_model

        model = load_model(model_name, seed=seed)
        n = self.load_params(full_params(model), ModelSpec.from_hf_config(model.config), layout)
        del model
        return n

    def load_params(self, params: dict, spec: ModelSpec, layout: Layout) -> int:
        """Keep our shards of a full parameter dict (e.g. one put once in the object store)."""
        self.spec = spec
        self.shapes = {n: tuple(t.shape) for n, t in params.items()}
        self.shards = shard_state_dict(params, self.spec, layout, self.rank)
        self.layout = layout
        return sum(t.numel() for _, t in self.shards.values())

    def reshard(self, dst: Layout) -> dict:
        pieces = plan_reshard(self.shapes, self.spec, self.layout, dst, self.world_size)
        dst_boxes = layout_boxes(self.shapes, self.spec, dst, self.rank)
        self.shards, stats = execute_reshard(pieces, self.rank, self.shards, dst_boxes)
        self.layout = dst
        stats["rank"] = self.rank
        return stats

    def get_shards(self) -> dict:
        return self.shards

    def close(self) -> None:
        import torch.distributed as dist
        dist.destroy_process_group()


def start_reshard_workers(model_name: str, layout: Layout, world_size: int,
                          params: dict | None = None, spec: ModelSpec | None = None) -> list:
    """world_size actors in one gloo group holding `layout`; with `params` (+ `spec`) the full
    weights come once through the object store instead of being rebuilt on every rank."""
    port = free_port()
    workers = [ReshardWorker.remote(r, world_size, port) for r in range(world_size)]
    if params is None:
        ray.get([w.load.remote(model_name, layout) for w in workers])
    else:
        ref = ray.put(params)
        ray.get([w.load_params.remote(ref, spec, layout) for w in workers])
    return workers
