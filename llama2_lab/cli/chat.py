"""``llama2-lab chat``: an interactive Llama-2-chat loop over stdin (one user message per line), dropping the
oldest turns when the dialog outgrows the model's context."""

from __future__ import annotations

import sys

from .common import PROG, CLIError, add_model_args, add_sampling_args, load_checkpoint, note, sampling_options


def run_chat(args) -> int:
    from ..inference import fit_dialog, stream
    from ..inference.parallel import launched_by_torchrun
    from ..text.chat import DialogError, encode_dialog, validate_dialog

    if launched_by_torchrun():  # every process would read its own lines of stdin and fall out of step
        raise CLIError("chat does not run under torchrun; use `generate` there, or chat in one process.")
    sampling = sampling_options(args)
    if sys.stdin is None or sys.stdin.closed:
        raise CLIError(
            "stdin is closed, and chat reads one message per line from it: run it in a terminal "
            "or pipe the messages in (e.g. `echo hi | llama2-lab chat`)."
        )
    dialog = [{"role": "system", "content": args.system}] if args.system else []
    if dialog:  # tags or broken text in --system: refused now, not once per message
        try:
            validate_dialog(dialog + [{"role": "user", "content": ""}])
        except DialogError as err:
            raise CLIError(f"--system: {err}") from None

    def prompt_budget(max_seq_len: int) -> int:
        # Keep room for the answer: the prompt may take the context less the reply budget (at most half).
        return max_seq_len - min(max(args.max_new_tokens, 1), max_seq_len // 2)

    def check_system(tokenizer, model_args) -> None:
        n = len(encode_dialog(tokenizer, dialog + [{"role": "user", "content": ""}]))
        budget = prompt_budget(model_args.max_seq_len)
        if n >= budget:
            raise CLIError(
                f"--system takes {n} tokens with the chat template, but the prompt may use only "
                f"{budget} (max_seq_len {model_args.max_seq_len} less room for the reply), leaving "
                "none for your messages: shorten it, or lower --max-new-tokens."
            )

    model, tokenizer = load_checkpoint(args, check_system if dialog else None)
    interactive = sys.stdin.isatty()
    max_seq_len = model.args.max_seq_len
    max_prompt = prompt_budget(max_seq_len)
    # Lines that are not UTF-8 arrive as lone surrogates and are refused one by one (check_text).
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        print("Chat with the model; Ctrl-D to quit.", file=sys.stderr)
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:  # EOF
            if interactive:
                sys.stdout.write("\n")
            return 0
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            fitted, dropped = fit_dialog(tokenizer, dialog + [{"role": "user", "content": text}], max_prompt)
        except (DialogError, ValueError) as err:  # a tag in the message, or a message too long: skip it
            print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
            continue
        if dropped:
            note(
                f"dropped the {dropped} oldest turn(s) so the dialog fits the context "
                f"({max_prompt} of max_seq_len={max_seq_len} tokens for the prompt)"
            )
        ids = encode_dialog(tokenizer, fitted)
        pieces = stream(model, tokenizer, ids, args.max_new_tokens, eos_id=tokenizer.eos_id, **sampling)
        reply = []
        for piece in pieces:
            if not reply:
                piece = piece[1:] if piece.startswith(" ") else piece  # "▁" after [/INST], as Meta's decode
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        dialog = fitted + [{"role": "assistant", "content": "".join(reply)}]


def add_chat(subparsers) -> None:
    p = subparsers.add_parser(
        "chat",
        help="talk to a chat model in the Llama-2-chat format",
        description="An interactive Llama-2-chat loop ([INST] ... [/INST]). Reads one user message per line; "
        "through a pipe it answers each line of stdin and stops at EOF. When the dialog outgrows "
        "the context, the oldest turns are dropped (the system message stays).",
    )
    add_model_args(p)
    p.add_argument("--system", default=None, help="a system message, merged into the first user turn")
    add_sampling_args(p, max_new_tokens=256)
    p.set_defaults(run=run_chat)
