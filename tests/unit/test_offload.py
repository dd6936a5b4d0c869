"""Colocated offload: what `move_state` moves (the code path a GPU learner runs between phases). The
target here is torch's `meta` device, so the move is real but frees nothing; bytes are hand-counted."""
import torch

from rl.workers.devices import move_state


def _model_and_adam():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)  # 12 + 3 = 15 fp32 parameters
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()  # AdamW state: exp_avg + exp_avg_sq per parameter (+ a scalar step each)
    return model, opt


def test_optimizer_state_moves_and_params_stay():
    model, opt = _model_and_adam()
    mib = move_state(model, opt, torch.device("meta"), optimizer=True, params=False)
    states = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    assert all(v.device.type == "meta" for v in states)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert mib * 2**20 == 2 * 15 * 4 + 2 * 4  # two fp32 moments of 15 values + two fp32 step scalars


def test_parameters_move_too_when_asked_and_nothing_when_not():
    model, opt = _model_and_adam()
    assert move_state(model, opt, torch.device("meta"), optimizer=False, params=False) == 0.0
    before = [p.detach().clone() for p in model.parameters()]
    # parameters swap their storage through .data (CUDA <-> host on a GPU; meta storage cannot be swapped in)
    mib = move_state(model, opt, torch.device("cpu"), optimizer=False, params=True)
    assert mib * 2**20 == 15 * 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
