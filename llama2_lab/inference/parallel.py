"""Tensor parallelism with torch.distributed: one model split over N processes, each holding 1/N of it.

Meta runs Llama 2 13B on 2 GPUs and 70B on 8 with fairscale's column- and row-parallel layers
(meta-llama/llama ``llama/model.py``; Megatron-LM, Shoeybi et al. 2019, §3). Here the same split is
applied to the package's readable ``Transformer`` from outside, with PyTorch's own tensor-parallel API
(a device mesh and ``parallelize_module``); the model code is not changed.

In every block (Touvron et al. 2023, §2.2: pre-norm attention and SwiGLU):

* ``wq``, ``wk``, ``wv`` are column-parallel (``ColwiseParallel``, weight rows split): rank r computes
  the queries, keys and values of its own heads, n_heads/N query heads and n_kv_heads/N KV heads, so
  attention (and its KV cache) runs on local heads with no communication;
* ``wo`` is row-parallel (``RowwiseParallel``, weight columns split): each rank multiplies its heads'
  outputs by its columns and one all-reduce sums the N partial results;
* SwiGLU likewise: ``w1`` and ``w3`` column-parallel (each rank owns hidden/N units, the gate is
  elementwise so it stays local), ``w2`` row-parallel, one all-reduce.

So a block costs two all-reduces of a (B, T, dim) activation, and the norms run replicated.

The embedding and the classifier follow Meta's files rather than the vocabulary-parallel alternative:
``tok_embeddings`` is split along the embedding width (``ColwiseParallel`` on ``nn.Embedding``, an
all-gather of (B, T, dim) after the lookup) and ``output`` along the vocabulary (``ColwiseParallel``,
an all-gather of the (B, T, V) logits). With this choice a rank's tensors are exactly the slices
``consolidated.{r}.pth`` holds, so with N equal to the shard count every rank reads its own file
as it is, and every rank ends with the full logits, samples the same token, and stays in step.

    torchrun --nproc-per-node 2 -m llama2_lab.cli generate /path/to/llama-2-13b --prompt "..."

Launched by ``torchrun``, each process calls ``init_distributed()`` (NCCL on CUDA, one GPU per
process; gloo on the CPU), then ``load_parallel(path, ctx)``: the model is built on the meta device,
parallelized, and given the rank's slices from ``shards.rank_state``.
"""

from __future__ import annotations

import atexit
import os
import random
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..core.config import ModelArgs
from ..core.transformer import Transformer
from ..formats.sharded import ShardError, check_world_size, rank_state, split_dim


class ParallelError(ValueError):
    """A parallel launch that cannot work as given; the message says what to change."""


@dataclass
class DistContext:
    """Where this process stands: its rank among ``world_size``, its device and the 1-D device mesh."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    mesh: object  # torch.distributed.device_mesh.DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True in a process started by ``torchrun`` (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join the process group torchrun set up: NCCL with one GPU per process on CUDA, else gloo on the CPU.

    ``device`` None picks CUDA when this process can see a GPU; "cpu" forces gloo. Calling it again
    returns the same context.
    """
    from torch.distributed.device_mesh import init_device_mesh

    if not launched_by_torchrun():
        raise ParallelError(
            "this is not a torchrun process (RANK/WORLD_SIZE/MASTER_ADDR are unset); launch with "
            "`torchrun --nproc-per-node N -m llama2_lab.cli ...`."
        )
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    want = torch.device(device) if device is not None else None
    if want is None:
        want = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.type == "cuda":
        if not torch.cuda.is_available():
            raise ParallelError("--device cuda asked for, but this process sees no CUDA GPU; use --device cpu (gloo).")
        if local >= torch.cuda.device_count():
            raise ParallelError(
                f"local rank {local} has no GPU: this machine shows {torch.cuda.device_count()}; "
                "launch at most that many processes per node."
            )
        want = torch.device("cuda", local)
        torch.cuda.set_device(want)
        backend = "nccl"
    elif want.type == "cpu":
        backend = "gloo"
    else:
        raise ParallelError(f"tensor parallelism runs on cuda (NCCL) or cpu (gloo), not {want.type}.")
    if not dist.is_initialized():
        dist.init_process_group(backend)
        atexit.register(shutdown)
    mesh = init_device_mesh(want.type, (world,), mesh_dim_names=("tp",))
    return DistContext(rank, world, local, want, backend, mesh)


# --- the plan -------------------------------------------------------------------------------------
def tp_plan(args: ModelArgs) -> dict:
    """{module name: ParallelStyle} for ``parallelize_module``: the split the module docstring describes."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = {
        "tok_embeddings": ColwiseParallel(output_layouts=Replicate()),  # width split, all-gather after
        "output": ColwiseParallel(output_layouts=Replicate()),  # vocabulary split, all-gather the logits
    }
    for i in range(args.n_layers):
        for name in ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3"):
            plan[f"layers.{i}.{name}"] = ColwiseParallel()  # local heads / local hidden units out
        for name in ("attention.wo", "feed_forward.w2"):
            plan[f"layers.{i}.{name}"] = RowwiseParallel()  # partial sums, one all-reduce
    return plan


def parallelize(model: Transformer, mesh) -> Transformer:
    """Apply ``tp_plan`` to ``model`` in place and give each attention module its local head counts.

    Attention reads ``n_heads`` / ``n_kv_heads`` from its own attributes at forward time, so after the
    split they are set to the per-rank counts (what Meta calls ``n_local_heads``); ``n_rep`` and
    ``head_dim`` do not change. The model's ``new_cache`` then sizes the KV cache to the local KV heads.
    """
    from torch.distributed.tensor.parallel import parallelize_module

    N = mesh.size()
    check_world_size(model.args, N)
    parallelize_module(model, mesh, tp_plan(model.args))
    for layer in model.layers:
        attn = layer.attention
        attn.n_heads, attn.n_kv_heads = model.args.n_heads // N, model.args.kv_heads // N
    return model


# --- loading -----------------------------------------------------------------------------------------
def agree(ctx: DistContext, fn, *args, **kwargs):
    """Run ``fn`` on every rank; if it fails on any rank, raise the same error on all of them.

    Without this a rank that cannot read its file would exit while the others wait in the next
    collective; here every rank learns which rank failed and why.
    """
    result, error = None, None
    try:
        result = fn(*args, **kwargs)
    except (ValueError, OSError) as e:
        error = f"{type(e).__name__}: {e}"
    errors = [None] * ctx.world_size
    dist.all_gather_object(errors, error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if len(failed) == ctx.world_size and len(set(errors)) == 1:
        raise ParallelError(f"on every rank: {error}")
    if failed:
        raise ParallelError("; ".join(f"rank {r}: {e}" for r, e in failed))
    return result


def _set_parameter(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))


def load_parallel(path: str | Path, ctx: DistContext, dtype=None) -> Transformer:
    """The checkpoint at ``path`` split over the ranks of ``ctx``: each rank reads and holds only its slices.

    The model is built on the meta device (no memory), parallelized, and each parameter becomes a
    DTensor around the rank's slice from ``shards.rank_state``. Returns the model in eval mode.
    """
    from torch.distributed.tensor import DTensor

    args, local = agree(ctx, rank_state, path, ctx.rank, ctx.world_size, dtype)
    with torch.device("meta"):
        model = Transformer(args)
    parallelize(model, ctx.mesh)
    names = {n for n, _ in model.named_parameters()}
    if names != local.keys():
        raise ShardError(
            f"internal: shards.py and Transformer disagree on tensor names {sorted(names ^ local.keys())[:4]}"
        )
    for name, param in list(model.named_parameters()):
        value = local.pop(name).to(ctx.device)
        if isinstance(param, DTensor):
            if split_dim(name) != param.placements[0].dim:  # the plan and the file layout must agree
                raise ShardError(
                    f"internal: {name} is split along dim {param.placements[0].dim} by the plan "
                    f"but along {split_dim(name)} in the files."
                )
            value = DTensor.from_local(
                value, ctx.mesh, param.placements, run_check=False, shape=param.shape, stride=param.stride()
            )
        _set_parameter(model, name, value)
    model.reset_rope(ctx.device)
    return model.eval()


# --- what each rank holds ----------------------------------------------------------------------------
def rank_weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of weights in this process: ``sharded`` (this rank's slices), ``replicated`` (norm gains)
    and ``full`` (the whole model's bytes, what one process would hold)."""
    from torch.distributed.tensor import DTensor

    out = {"sharded": 0, "replicated": 0, "full": 0}
    for p in model.parameters():
        if isinstance(p, DTensor):
            out["sharded"] += p.to_local().numel() * p.element_size()
        else:
            out["replicated"] += p.numel() * p.element_size()
        out["full"] += p.numel() * p.element_size()
    return out


def shared_seed(ctx: DistContext, seed: int | None) -> int:
    """A sampling seed every rank agrees on: ``seed`` itself, or one drawn by rank 0 and broadcast.

    Every rank samples from the same (all-gathered) logits; with the same seed they draw the same token
    and stay in step, as Meta's reference seeds every rank alike (``torch.manual_seed(seed)``).
    """
    box = [seed if seed is not None else random.SystemRandom().randrange(2**31)]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def quiet_other_ranks(ctx: DistContext) -> None:
    """Only rank 0 writes to stdout (Meta's reference does the same); errors on stderr stay visible."""
    if not ctx.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def shutdown() -> None:
    """Leave the process group together. A barrier first: a rank that tears down its connections while
    another still holds them can make gloo abort the process at exit ("terminate called without an
    active exception", SIGABRT), which turned a finished run into a failed one on a busy CPU."""
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))  # names a rank that never arrives
        else:
            dist.barrier()
    except RuntimeError as err:  # a peer already gone (it failed, and said why on its own stderr)
        print(f"rank {dist.get_rank()}: leaving without the others: {err}", file=sys.stderr)
    dist.destroy_process_group()


# --- a demo for notebooks/14_scaling_out.ipynb ---------------------------------------------------------
def count_collectives(model: nn.Module, tokens: torch.Tensor) -> dict[str, int]:
    """The collectives one forward pass of ``tokens`` (B, T) issues, by name (DTensor's CommDebugMode)."""
    from torch.distributed.tensor.debug import CommDebugMode

    mode = CommDebugMode()
    with torch.inference_mode(), mode:
        model(tokens)
    return {str(op).rsplit(".", 1)[-1]: n for op, n in mode.get_comm_counts().items()}


def demo(argv=None) -> int:
    """``torchrun --nproc-per-node N -m llama2_lab.inference.parallel PATH --max-new-tokens K --out FILE``: greedy
    tokens, the weight bytes of every rank and the collectives of one forward pass, written by rank 0 as JSON."""
    import argparse
    import json

    from .generation import generate

    p = argparse.ArgumentParser(prog="python -m llama2_lab.inference.parallel", description=demo.__doc__)
    p.add_argument("path")
    p.add_argument("--prompt-ids", default="1", help="comma-separated token ids (default: BOS)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ctx = init_distributed()
    model = load_parallel(a.path, ctx)
    prompt = [int(t) for t in a.prompt_ids.split(",")]
    tokens = list(generate(model, prompt, a.max_new_tokens, temperature=0.0, eos_id=None))
    comms = count_collectives(model, torch.tensor([prompt], device=ctx.device))
    held = [None] * ctx.world_size
    dist.all_gather_object(held, rank_weight_bytes(model))
    if ctx.is_main:
        from ..utils.io import atomic_write_text

        atomic_write_text(
            Path(a.out),
            json.dumps(
                {
                    "world_size": ctx.world_size,
                    "backend": ctx.backend,
                    "tokens": tokens,
                    "bytes_per_rank": held,
                    "collectives_per_forward": comms,
                    "n_layers": model.args.n_layers,
                },
                indent=1,
            )
            + "\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(demo())
