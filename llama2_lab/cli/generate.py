"""``llama2-lab generate``: continue a prompt with a model, streaming the text to stdout and the token count,
speed and stop reason to stderr."""

from __future__ import annotations

import sys
import time

from .common import add_model_args, add_sampling_args, load_checkpoint, note, sampling_options


def run_generate(args) -> int:
    from ..inference import stream
    from ..text.guards import check_text

    sampling = sampling_options(args)
    check_text(args.prompt, "--prompt")
    model, tokenizer = load_checkpoint(args)
    prompt = tokenizer.encode(args.prompt, bos=True)
    # The prompt is printed as the user wrote it; the stream continues its text (leading space kept).
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    t0 = time.perf_counter()
    pieces = stream(
        model, tokenizer, prompt, args.max_new_tokens, eos_id=tokenizer.eos_id, compile=args.compile, **sampling
    )
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    seconds = time.perf_counter() - t0
    sys.stdout.write("\n")
    sys.stdout.flush()
    n = len(pieces.tokens)
    note(
        f"{n} tokens in {seconds:.2f} s ({n / max(seconds, 1e-9):.1f} tokens/s), prompt {len(prompt)} tokens, "
        f"stopped by {_REASONS[pieces.stop_reason]}"
    )
    return 0


_REASONS = {
    "eos": "end of sequence",
    "stop": "a stop string",
    "length": "--max-new-tokens",
    "context": "the end of the model's context (max_seq_len)",
}


def add_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="continue a prompt, streaming the text",
        description="Continue --prompt with the model, streaming text to stdout; the token count and speed "
        "go to stderr. Sampling defaults are Meta's: temperature 0.6, top-p 0.9.",
    )
    add_model_args(p)
    p.add_argument("--prompt", default="", help="text to continue (default: empty, start from BOS)")
    add_sampling_args(p)
    p.add_argument(
        "--compile",
        action="store_true",
        help="decode with the fast path: static KV cache + torch.compile (CUDA graphs on a GPU); "
        "the first run pays the compile time",
    )
    p.set_defaults(run=run_generate)
