"""check_masked_loss and check_train_step: the loss mask and one optimiser step of the recipe (notebook 07)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .builds import _run, _tiny_model
from .gatt import _with_grad
from .harness import CheckResult, _Case, _Mistake


# =============================================================================================
# 07: the masked loss and one optimiser step
# =============================================================================================
def _loss_reference(model, rows, mask, kind="right"):
    x, y = rows[:, :-1], rows[:, 1:]  # (B, T) inputs and next-token targets
    if kind == "no_shift":
        x, y = rows[:, :-1], rows[:, :-1]
    m = mask[:, 1:] if kind != "mask_off_by_one" else mask[:, :-1]  # the mask of the predicted token
    logits = model(x).float()  # (B, T, V)
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none").view_as(y)
    m = m.float()
    if kind == "no_mask":
        return ce.mean()
    if kind == "mean_over_all":
        return (ce * m).sum() / m.numel()
    if kind == "row_means":
        return ((ce * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    if kind == "sum":
        return (ce * m).sum()
    return (ce * m).sum() / m.sum().clamp(min=1)


def reference_masked_loss(model, rows, mask):
    """The package's masked loss behind notebook 07's signature: rows (B, T+1) ids, mask (B, T+1) -> scalar."""
    return _loss_reference(model, rows, mask)


def _loss_cases():
    g = torch.Generator().manual_seed(7)
    rows = torch.randint(0, 96, (3, 13), generator=g)
    full = torch.ones_like(rows)
    sft = torch.zeros_like(rows)
    sft[0, 6:] = 1
    sft[1, 3:8] = 1
    sft[2, 10:] = 1
    return [
        _Case("pretraining: every token is learned (mask all 1)", torch.float32, {"rows": rows, "mask": full}),
        _Case("SFT: a different answer span in every row", torch.float32, {"rows": rows, "mask": sft}),
    ]


_LOSS_MISTAKES = [
    (
        "mask_off_by_one",
        (
            "your loss matches the mask taken on the inputs (mask[:, :-1]): the mask belongs to the "
            "token being predicted, so use mask[:, 1:] next to targets rows[:, 1:]."
        ),
    ),
    (
        "no_mask",
        (
            "your loss ignores the mask (a plain mean over every token): multiply the per-token losses by the "
            "mask and divide by the mask's sum."
        ),
    ),
    ("mean_over_all", ("your loss divides by all B·T tokens: divide by the number of learned tokens, mask.sum().")),
    (
        "row_means",
        (
            "your loss averages per-row means: sum the masked losses over the whole batch and divide by the "
            "total number of learned tokens (a row with a long answer counts more)."
        ),
    ),
    ("sum", ("your loss is the sum, not the mean, over the learned tokens: divide by mask.sum().")),
    (
        "no_shift",
        (
            "your targets are the inputs themselves: the model at position t predicts token t+1, so the inputs "
            "are rows[:, :-1] and the targets rows[:, 1:]."
        ),
    ),
]


def check_masked_loss(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(model, rows, mask) -> scalar`` with sum(ce · mask[:, 1:]) / sum(mask[:, 1:])."""
    model = _tiny_model(1)

    def variant(kind):
        return lambda c: _loss_reference(model, c.data["rows"], c.data["mask"], kind)

    mistakes = [_Mistake(k, h, variant(k)) for k, h in _LOSS_MISTAKES]
    return _run(
        "check_masked_loss",
        "masked loss",
        _loss_cases(),
        lambda c: _as_scalar(fn(model, c.data["rows"].clone(), c.data["mask"].clone())),
        lambda c: _loss_reference(model, c.data["rows"], c.data["mask"]),
        mistakes,
        atol=1e-5,
        rtol=1e-5,
        fallback="Expected sum(cross_entropy · mask[:, 1:]) / mask[:, 1:].sum(), on logits of rows[:, :-1].",
        verbose=verbose,
    )


def _as_scalar(x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"return the loss as a tensor (so .backward() works), got {type(x).__name__}")
    return x.reshape(())


def _step_reference(model, opt, rows, mask, step, cfg, kind="right"):
    """Meta-style recipe step: lr from the schedule, zero grads, backward, clip, step."""
    from ...training import lr_at

    lr = lr_at(step + (1 if kind == "lr_next_step" else 0), cfg)
    if kind != "lr_not_set":
        for g in opt.param_groups:
            g["lr"] = lr
    loss = _loss_reference(model, rows, mask)
    if kind != "no_zero_grad":
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if kind not in ("no_clip",):
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss


def reference_train_step(model, opt, rows, mask, step, cfg, loss_fn=None):
    """The package's recipe step behind notebook 07's signature (``loss_fn`` replaces the masked loss)."""
    from ...training import lr_at

    for g in opt.param_groups:
        g["lr"] = lr_at(step, cfg)
    loss = (loss_fn or reference_masked_loss)(model, rows, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss


_STEP_MISTAKES = [
    (
        "no_clip",
        (
            "your parameters match a step without gradient clipping: call "
            "torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) between backward() and opt.step() "
            "(clipping after opt.step() is the same as not clipping: the update already used the raw gradients)."
        ),
    ),
    (
        "no_zero_grad",
        (
            "your second step matches gradients accumulated over both steps: call "
            "opt.zero_grad() before loss.backward() (PyTorch adds new gradients to the old ones)."
        ),
    ),
    (
        "lr_not_set",
        (
            "your parameters match the optimiser's own learning rate: set every param group's lr to "
            "train.lr_at(step, cfg) before the step (warmup and cosine come from the schedule)."
        ),
    ),
    ("lr_next_step", ("your parameters match lr_at(step + 1, cfg): step is 0-based, use lr_at(step, cfg).")),
]


def check_train_step(fn, verbose: bool = True) -> CheckResult:
    """Run ``fn(model, opt, rows, mask, step, cfg)`` twice (steps 0 and 1) and compare every parameter
    with the package's recipe: lr from ``train.lr_at``, zero_grad, backward, clip at cfg.grad_clip, step."""
    from ...training import TrainConfig, make_optimizer

    cfg = TrainConfig.from_preset("test", lr=5e-2, warmup_steps=3, grad_clip=0.5)
    cases = _loss_cases()

    def run(step_fn):
        def go(c):
            model = _tiny_model(2).train()
            opt = make_optimizer(model, cfg)
            for g in opt.param_groups:
                g["lr"] = 1.0  # a value the schedule never gives: forgetting to set it shows
            for step in (0, 1):
                step_fn(model, opt, c.data["rows"], c.data["mask"], step, cfg)
            return tuple(p.detach().clone() for p in model.parameters())

        return go

    def learner(c):
        with torch.enable_grad():
            return run(fn)(c)

    def reference(c):
        with torch.enable_grad():
            return run(_step_reference)(c)

    def variant(kind):
        wrong = run(lambda *a: _step_reference(*a, kind=kind))
        return lambda c: _with_grad(wrong, c)  # _diagnose runs under no_grad; a step needs gradients

    mistakes = [_Mistake(k, h, variant(k)) for k, h in _STEP_MISTAKES]
    return _run(
        "check_train_step",
        "training step",
        cases,
        learner,
        reference,
        mistakes,
        atol=1e-5,
        rtol=1e-4,
        fallback="The parameters after two steps differ from the recipe's: lr_at(step, cfg) into every "
        "param group, zero_grad, your masked loss, backward, clip_grad_norm_, step.",
        verbose=verbose,
    )
