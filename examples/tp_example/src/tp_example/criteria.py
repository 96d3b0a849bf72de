"""First-order Taylor importance: |w * dL/dw| per weight, the change in loss the first-order Taylor
expansion predicts when the weight is set to zero. Molchanov, Mallya, Tyree, Frosio and Kautz,
"Importance Estimation for Neural Network Pruning", CVPR 2019 (they sum it over filters to prune
whole filters; here it scores each weight, and turboprune keeps the top ones)."""

from __future__ import annotations


def taylor_score(model, ctx):
    """One score per prunable weight: |w * g|, g the gradient of the loss summed over ctx.batches.

    Under DDP each rank holds its part of the same global batches: ctx.average turns its gradient
    into the global batch's (the identity on one process), so the scores do not depend on the
    number of ranks."""
    model.train()
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    for x, y in ctx.batches:
        ctx.loss_fn(model(x), y).backward()
    return {name: (params[name] * ctx.average(params[name].grad)).abs() for name in ctx.mask}
