"""Sharded pretraining: ``llama2-lab train`` under torchrun, with FSDP2 (``fully_shard``) and the data split by rank.

    torchrun --nproc-per-node 2 -m llama2_lab.cli train --preset fast

Fully sharded data parallelism (ZeRO-3; Rajbhandari et al. 2020) keeps 1/N of every parameter, gradient
and AdamW moment on each of the N processes. Before a block runs forward (and again backward) its
full weights are all-gathered, used, and dropped; its gradients are reduce-scattered, so each rank
ends a step with the averaged gradient of its own slice and updates only that slice. Llama 2 itself
was pretrained on Meta's Research SuperCluster with this kind of sharding (Touvron et al. 2023, §2.2.1).

Each block is its own ``fully_shard`` unit (one all-gather per block, overlapped with the previous
block's compute), and the root unit takes the embedding, final norm and classifier.

The data: every rank computes the same global batch of row indices (``train.step_indices`` is a pure
function of the seed and the step) and takes its contiguous 1/N of the rows. Each rank's loss is the
mean over its rows and FSDP averages gradients over ranks, so the update is the one a single process
makes on the whole batch, up to float rounding (the sums run in another order).

Checkpoints are *gathered* into the project's ordinary training checkpoint (``train.save_checkpoint``),
written by rank 0: the full model, AdamW's moments (index-keyed, as ``optimizer.state_dict()``), the
step, the RNG states. Why not ``torch.distributed.checkpoint``: the models trained here are small, so
gathering them costs nothing, and one file means a run started on 2 processes resumes on 1, 2 or 4 (or
in a notebook) and ``load_checkpoint`` reads it as always. For a model that does not fit one host,
DCP (every rank writes its own shards, nothing is gathered) would be the right tool. On resume every
rank reads the file and keeps its slice (``distribute_tensor`` with ``src_data_rank=None``: no copy is
sent), and the run continues bit for bit as if never stopped (tests/test_parallel.py checks it).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..inference.parallel import (
    DistContext,
    init_distributed,
    launched_by_torchrun,  # noqa: F401 - re-exported for pretrain.py
    quiet_other_ranks,
)


class ShardedTraining:
    """The distributed side of one ``train.train`` run: shard the model, split the batch, gather for saving."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def check(self, cfg) -> None:
        """Every batch must split evenly over the ranks (the same number of rows each, or the mean is biased)."""
        N = self.ctx.world_size
        for what, B in (("batch_size", cfg.batch_size), ("final_batch_size", cfg.final_batch_size)):
            if B is not None and B % N:
                raise ValueError(
                    f"{what} = {B} does not split over {N} processes; use a multiple of {N} "
                    f"(each rank takes {what} / {N} rows of every step's batch)."
                )

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2 in place: each block its own unit, then the root (embedding, final norm, classifier)."""
        from torch.distributed.fsdp import fully_shard

        for layer in model.layers:
            fully_shard(layer, mesh=self.ctx.mesh)
        fully_shard(model, mesh=self.ctx.mesh)
        return model

    def local_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous 1/N of the global batch rows (B, T + 1) -> (B/N, T + 1)."""
        B, N, r = len(rows), self.ctx.world_size, self.ctx.rank
        return rows[r * B // N : (r + 1) * B // N]

    def mean(self, loss: torch.Tensor) -> float:
        """The global batch's mean loss: the mean of the ranks' means (equal row counts)."""
        t = loss.detach().float().reshape(1).clone()
        dist.all_reduce(t)  # SUM: gloo has no AVG
        return t.item() / self.ctx.world_size

    # --- gathering and restoring ------------------------------------------------------------------
    def full_model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's state dict on the CPU, on every rank (an all-gather per tensor)."""
        from torch.distributed.tensor import DTensor

        return {
            k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in model.state_dict().items()
        }

    def full_optimizer_state(self, opt: torch.optim.Optimizer) -> dict:
        """``opt.state_dict()`` with every sharded moment gathered: the same dict a single process saves."""
        from torch.distributed.tensor import DTensor

        sd = opt.state_dict()
        state = {
            i: {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in s.items()}
            for i, s in sd["state"].items()
        }
        return {"state": state, "param_groups": sd["param_groups"]}

    def load_state(self, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
        """Restore a gathered checkpoint: every rank keeps its slice of the model and of AdamW's moments."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        def local(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            value = value.to(self.device)
            if isinstance(like, DTensor) and value.shape == like.shape:
                # src_data_rank=None: every rank has the full tensor and cuts its own slice, nothing is sent
                return distribute_tensor(value, like.device_mesh, like.placements, src_data_rank=None)
            return value

        params = dict(model.named_parameters())
        missing = params.keys() ^ state["model"].keys()
        if missing:
            raise ValueError(f"the checkpoint's model does not match this one: {sorted(missing)[:4]}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(local(state["model"][name], p))
        ordered = [p for group in opt.param_groups for p in group["params"]]
        osd = state["optimizer"]
        osd = {
            "state": {i: {k: local(v, ordered[int(i)]) for k, v in s.items()} for i, s in osd["state"].items()},
            "param_groups": osd["param_groups"],
        }
        opt.load_state_dict(osd)

    def save_checkpoint(
        self, path, model, opt, cfg, step, history, tokens_seen, elapsed, n_rows, tokenizer, window=(0.0, 0)
    ) -> None:
        """Gather (every rank takes part), then rank 0 writes ``train.save_checkpoint``'s file; all wait for it."""
        from .checkpoints import save_checkpoint

        model_state, opt_state = self.full_model_state(model), self.full_optimizer_state(opt)
        if self.is_main:
            save_checkpoint(
                path,
                model,
                opt,
                cfg,
                step,
                history,
                tokens_seen,
                elapsed,
                n_rows,
                tokenizer,
                window=window,
                model_state=model_state,
                optimizer_state=opt_state,
            )
        dist.barrier()

    def gather(self, model: torch.nn.Module) -> torch.nn.Module:
        """A plain (unsharded) Transformer with the trained weights, on every rank, for saving and sampling."""
        from ..core.transformer import Transformer

        plain = Transformer(model.args)
        plain.load_state_dict(self.full_model_state(model))
        return plain.to(self.device).train(model.training)


def start(cfg) -> ShardedTraining:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) and check the batch splits evenly."""
    device = None if cfg.device == "auto" else cfg.device
    ctx = init_distributed(torch.device(device).type if device is not None else None)
    quiet_other_ranks(ctx)
    run = ShardedTraining(ctx)
    run.check(cfg)
    return run
