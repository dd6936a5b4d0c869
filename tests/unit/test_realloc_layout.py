"""Layouts tile every parameter exactly; reshard plans use one sender per piece."""
import itertools

import pytest

from rollout.realloc.layout import Layout, ModelSpec, box_numel, chunk_bounds, intersect, param_box
from rollout.realloc.reshard import layout_boxes, moved_bytes, plan_reshard

SPEC = ModelSpec(num_layers=3, num_heads=4, num_kv_heads=2, tied_embeddings=True)
H, I, V, KV = 16, 24, 40, 8  # hidden, intermediate, vocab, kv dim (2 heads x 4)
SHAPES = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
for i in range(3):
    p = f"model.layers.{i}."
    SHAPES.update({p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
                   p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
                   p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                   p + "mlp.down_proj.weight": (H, I), p + "input_layernorm.weight": (H,),
                   p + "post_attention_layernorm.weight": (H,)})
LAYOUTS = [Layout(dp=2, zero=True), Layout(tp=2), Layout(pp=2), Layout(dp=2), Layout(tp=4),
           Layout(dp=2, tp=2, zero=True), Layout(tp=2, pp=2), Layout(pp=3), Layout(dp=4, zero=True)]


def test_hand_computed_boxes():
    assert chunk_bounds(10, 4, 1) == (2, 5)
    assert param_box("model.layers.0.self_attn.o_proj.weight", (16, 16), SPEC, Layout(tp=2), 1) == ((0, 16), (8, 16))
    assert param_box("model.layers.0.mlp.up_proj.weight", (24, 16), SPEC, Layout(tp=2), 1) == ((12, 24), (0, 16))
    # tp=4 > 2 kv heads: ranks 0,1 share head 0, ranks 2,3 head 1
    assert param_box("model.layers.0.self_attn.k_proj.weight", (8, 16), SPEC, Layout(tp=4), 1) == ((0, 4), (0, 16))
    assert param_box("model.layers.0.self_attn.k_proj.weight", (8, 16), SPEC, Layout(tp=4), 2) == ((4, 8), (0, 16))
    # pp=2 over 3 layers: stage 0 = layer 0, stage 1 = layers 1-2; tied embedding on both stages
    assert param_box("model.layers.1.mlp.up_proj.weight", (24, 16), SPEC, Layout(pp=2), 0) is None
    assert param_box("model.embed_tokens.weight", (40, 16), SPEC, Layout(pp=2), 1) == ((0, 40), (0, 16))
    assert param_box("model.norm.weight", (16,), SPEC, Layout(dp=2, zero=True), 1) == ((8, 16),)
    assert Layout(dp=2, tp=2, pp=2).coords(5) == (0, 1, 1)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_every_replica_group_tiles_each_param_exactly(layout):
    # ranks with the same dp index (or all ranks without ZeRO for one dp index) cover every element once
    for name, shape in SHAPES.items():
        counts = {}
        for rank in range(layout.world_size):
            box = param_box(name, shape, SPEC, layout, rank)
            if box is not None:
                counts[box] = counts.get(box, 0) + 1
        distinct = list(counts)
        assert sum(box_numel(b) for b in distinct) == box_numel(tuple((0, n) for n in shape)), name
        for a, b in itertools.combinations(distinct, 2):
            assert intersect(a, b) is None, (name, a, b)


@pytest.mark.parametrize("src,dst", list(itertools.permutations(LAYOUTS[:7], 2))[:24],
                         ids=lambda x: str(x))
def test_plan_covers_each_destination_with_one_sender_per_piece(src, dst):
    world = max(src.world_size, dst.world_size)
    pieces = plan_reshard(SHAPES, SPEC, src, dst, world)
    for rank in range(world):
        for name, need in layout_boxes(SHAPES, SPEC, dst, rank).items():
            got = [p for p in pieces if p.dst == rank and p.name == name]
            assert sum(box_numel(p.box) for p in got) == box_numel(need)
            for a, b in itertools.combinations(got, 2):
                assert intersect(a.box, b.box) is None  # no piece arrives twice
            for p in got:  # the sender really holds it
                held = layout_boxes(SHAPES, SPEC, src, p.src)[name]
                assert intersect(held, p.box) == p.box


def test_identity_moves_nothing_and_replicas_share_the_sending():
    assert moved_bytes(plan_reshard(SHAPES, SPEC, Layout(tp=2), Layout(tp=2), 2)) == 0
    pieces = plan_reshard(SHAPES, SPEC, Layout(dp=2), Layout(dp=2, tp=2), 4)
    senders = {p.src for p in pieces if p.src != p.dst}
    assert senders == {0, 1}  # ranks 2, 3 are fed by both replicas, not all by rank 0
    with pytest.raises(ValueError, match="more than 2 ranks"):
        plan_reshard(SHAPES, SPEC, Layout(tp=4), Layout(tp=2), 2)
