"""Actor placement the Ray way: one placement group per run, one bundle per actor, and each actor
asks for its CPUs/GPUs inside its bundle (so Ray sets CUDA_VISIBLE_DEVICES to exactly its GPUs; engines
land on disjoint GPUs). A colocated role shares another role's bundle with fractional resources.

    roles  = {"learner": Role(1, cpus=0.5, gpus=1), "engine": Role(2, cpus=0.5, gpus=1),
              "critic": Role(1, cpus=0, gpus=0.5, colocate_with="learner")}
    place  = Placement.create(roles, strategy="PACK", timeout_s=60)
    Actor.options(**place.options("engine", 1)).remote(...)
    place.close()

Inside a Ray Tune trial (already in a placement group) no group is made: actors are captured by the
trial's own group. Example of the pure part: bundles_for(roles) -> ([{CPU: .5, GPU: 1.5}, ...], {...})
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Role:
    count: int = 1
    cpus: float = 0.5
    gpus: float = 0.0
    colocate_with: str | None = None  # share this role's bundles (actor i with actor i % count)
    custom: dict | None = None  # custom Ray resources per actor, e.g. {"node_b": 0.1} to pin it to a node


def bundles_for(roles: dict[str, Role]) -> tuple[list[dict], dict[str, list[int]]]:
    """-> (bundles, role -> bundle index per actor). Own roles get a bundle per actor in the order
    given; a colocated role's resources are added to its host's bundles."""
    bundles: list[dict] = []
    index: dict[str, list[int]] = {}
    for name, r in roles.items():
        if r.colocate_with is None and r.count > 0:
            index[name] = list(range(len(bundles), len(bundles) + r.count))
            bundles += [_resources(r.cpus, r.gpus, r.custom) for _ in range(r.count)]
    for name, r in roles.items():
        if r.colocate_with is not None and r.count > 0:
            if r.colocate_with not in index:
                raise ValueError(f"resources: {name} is colocated with {r.colocate_with!r}, which has no actors")
            host = index[r.colocate_with]
            index[name] = [host[i % len(host)] for i in range(r.count)]
            for b in index[name]:
                for key, v in _resources(r.cpus, r.gpus, r.custom).items():
                    bundles[b][key] = bundles[b].get(key, 0.0) + v
    for b in bundles:
        if not b:
            b["CPU"] = 0.01  # Ray refuses empty bundles
    return bundles, index


def _resources(cpus: float, gpus: float, custom: dict | None = None) -> dict:
    return {k: float(v) for k, v in (("CPU", cpus), ("GPU", gpus), *(custom or {}).items()) if v}


_OPEN: list["Placement"] = []  # groups this process made and has not removed (released before a restart)


def release_all() -> None:
    """Removes every placement group this process still holds (a dead attempt's, before a restart)."""
    for p in list(_OPEN):
        p.close()


class Placement:
    def __init__(self, roles: dict[str, Role], pg=None, index: dict[str, list[int]] | None = None):
        self.roles, self.pg, self.index = roles, pg, index or {}
        if pg is not None:
            _OPEN.append(self)

    @classmethod
    def create(cls, roles: dict[str, Role], strategy: str = "PACK", timeout_s: float = 120.0) -> "Placement":
        import ray
        from ray.util.placement_group import get_current_placement_group, placement_group
        if get_current_placement_group() is not None:  # a Tune trial: its group captures our actors
            return cls(roles)
        bundles, index = bundles_for(roles)
        pg = placement_group(bundles, strategy=strategy)
        ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
        if not ready:
            ray.util.remove_placement_group(pg)
            need = {k: sum(b.get(k, 0.0) for b in bundles) for k in ("CPU", "GPU")}
            have = ray.cluster_resources()
            raise RuntimeError(f"resources: the run's placement group ({need['CPU']:g} CPUs, {need['GPU']:g} GPUs "
                               f"over {len(bundles)} bundles, {strategy}) was not placed within {timeout_s:g} s; "
                               f"the cluster has {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs")
        return cls(roles, pg, index)

    def options(self, role: str, i: int = 0) -> dict:
        """`.options(...)` for actor i of `role`: its resources, inside its bundle."""
        r = self.roles[role]
        opts = {"num_cpus": r.cpus, "num_gpus": r.gpus, **({"resources": dict(r.custom)} if r.custom else {})}
        if self.pg is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.pg, placement_group_bundle_index=self.index[role][i])
        return opts

    def close(self) -> None:
        if self.pg is not None:
            import ray
            ray.util.remove_placement_group(self.pg)
            self.pg = None
            _OPEN.remove(self)
