#!/usr/bin/env python3
"""Golden numbers for the training losses (issue 5): masked cross entropy, KL to the teacher in
both directions and both reductions (with temperature), sequence log-probs and DPO with both
reference models. Plain PyTorch, written from METHOD.md section 3.

How to rerun (CPU only, a second):

    /work/venv-golden/bin/python tests/golden/make_loss_golden.py

It writes tests/golden/losses.json; `stages/src/losses/*.rs` tests read it and must match
within 1e-5.
"""
import json
import pathlib

import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
torch.manual_seed(5)

B, S, V = 2, 4, 7
TEMPERATURE = 2.0
BETA = 0.1


def rand_logits():
    return (torch.randn(B, S, V) * 2.0).double()


student, teacher = rand_logits(), rand_logits()
targets = torch.randint(0, V, (B, S))
# Row 0 has two masked positions, row 1 one: reductions that ignore the mask differ.
mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.float64)


def ce(logits, targets, mask):
    logp = F.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    return -(logp * mask).sum() / mask.sum()


def kl(student, teacher, mask, direction, reduction, t):
    ls, lt = F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1)
    if direction == "forward":  # KL(teacher || student)
        per = (lt.exp() * (lt - ls)).sum(-1)
    else:  # KL(student || teacher)
        per = (ls.exp() * (ls - lt)).sum(-1)
    if reduction == "reference":
        # The reference code: F.kl_div(..., reduction="batchmean") on [B, S, V] sums everything
        # and divides by B, without the mask.
        out = per.sum() / student.shape[0]
    else:
        out = (per * mask).sum() / mask.sum()
    return out * t * t


def seq_logps(logits, targets, mask):
    return (F.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0] * mask).sum(-1)


def dpo(pc, pr, rc, rr, beta):
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return {
        "loss": loss.item(),
        "chosen_rewards": chosen.tolist(),
        "rejected_rewards": rejected.tolist(),
        "margin": (chosen - rejected).mean().item(),
        "accuracy": (chosen > rejected).double().mean().item(),
    }


out = {
    "shape": [B, S, V],
    "student": student.flatten().tolist(),
    "teacher": teacher.flatten().tolist(),
    "targets": targets.flatten().tolist(),
    "mask": mask.flatten().tolist(),
    "temperature": TEMPERATURE,
    "ce": ce(student, targets, mask).item(),
    "kl": {
        f"{d}_{r}": kl(student, teacher, mask, d, r, TEMPERATURE).item()
        for d in ["forward", "reverse"]
        for r in ["reference", "token_mean"]
    },
}

# DPO: chosen and rejected continuations scored by the policy, the teacher and a frozen copy of
# the policy before training ("self"); each model's logits are [B, S, V] per side.
sides = {}
for side in ["chosen", "rejected"]:
    t = torch.randint(0, V, (B, S))
    m = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.float64)
    logits = {name: rand_logits() for name in ["policy", "teacher", "self"]}
    sides[side] = {"targets": t.flatten().tolist(), "mask": m.flatten().tolist()}
    for name, l in logits.items():
        sides[side][name] = l.flatten().tolist()
        sides[side][f"{name}_logps"] = seq_logps(l, t, m).tolist()
lp = lambda side, name: torch.tensor(sides[side][f"{name}_logps"], dtype=torch.float64)
out["dpo"] = {
    "beta": BETA,
    "sides": sides,
    "teacher": dpo(lp("chosen", "policy"), lp("rejected", "policy"), lp("chosen", "teacher"), lp("rejected", "teacher"), BETA),
    "self": dpo(lp("chosen", "policy"), lp("rejected", "policy"), lp("chosen", "self"), lp("rejected", "self"), BETA),
}

(HERE / "losses.json").write_text(json.dumps(out, indent=1) + "\n")
print("wrote", HERE / "losses.json")
