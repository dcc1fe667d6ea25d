"""Text generation: prefill the prompt once, then decode one token at a time on the KV cache.

Sampling follows Meta's ``llama/generation.py``: divide the logits by the temperature, softmax,
then nucleus (top-p) sampling [Holtzman et al. 2020]; top-k (gpt-fast, HF) is there too.
The defaults are Meta's, temperature 0.6 and top_p 0.9; temperature 0 means greedy (argmax).

Everything single-prompt goes through one decode loop (``_Decoding``): ``generate_iter`` yields
its token ids, ``stream`` its text, ``generate`` collects both plus log-probs and attention.
``generate_batch`` runs several prompts together as Meta does (right-pad, common positions).

The model follows its weights: generation runs on the model's device and dtype; logits are float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ..utils.validate import check_int
from .inputs import _as_ids, _Chunk, _device_of, _generator, _Holdback, _split_stop
from .sampling import check_sampling, sample_checked


# The decode loop
# ---------------------------------------------------------------------------------------------
class _Decoding:
    """One generation for one prompt: validate, prefill, then decode token by token.

    Iterating yields ``_Chunk``s of released tokens/text. Afterwards ``stop_reason`` says why it
    ended and ``attention(n)`` assembles the recorded attention over the first n positions.
    """

    def __init__(
        self,
        model,
        prompt_ids,
        max_new_tokens: int,
        *,
        temperature: float = 0.6,
        top_p: float | None = 0.9,
        top_k: int | None = None,
        seed: int | None = None,
        stop=None,
        tokenizer=None,
        logprobs: bool = False,
        record_attention: bool = False,
        eos_id: int | None = 2,
        cache_len: int | None = None,
        compile: bool = False,
    ):
        check_sampling(temperature, top_k, top_p, seed)
        if compile and record_attention:
            raise ValueError(
                "record_attention needs the eager path (the compiled step cannot hand back "
                "attention probabilities); use compile=False to inspect attention."
            )
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
        self.prompt = _as_ids(prompt_ids)
        self.stop_ids, self.stop_strings = _split_stop(stop, eos_id)
        if self.stop_strings and tokenizer is None:
            raise ValueError(
                f"stop strings {self.stop_strings!r} need the tokenizer to read the text: "
                "pass tokenizer=..., or give stop token ids instead."
            )
        P, max_seq_len = len(self.prompt), model.args.max_seq_len
        if P > max_seq_len or (P == max_seq_len and max_new_tokens > 0):
            raise ValueError(
                f"the prompt has {P} tokens but the model's context is max_seq_len={max_seq_len}: "
                f"no room for new tokens. Shorten the prompt to at most {max_seq_len - 1} tokens."
            )
        # Like Meta, generation stops at the end of the context: prompt + new tokens <= max_seq_len.
        self.max_new = min(max_new_tokens, max_seq_len - P)
        self.context_limited = self.max_new < max_new_tokens
        self.cache_len = max(P + self.max_new, 1) if cache_len is None else cache_len
        if self.cache_len < P + self.max_new or self.cache_len > max_seq_len:
            raise ValueError(
                f"cache_len={cache_len} must be in {P + self.max_new}..{max_seq_len} "
                f"(prompt {P} + up to {self.max_new} new tokens, at most max_seq_len)."
            )
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.top_p, self.top_k, self.seed = temperature, top_p, top_k, seed
        self.want_logprobs, self.record_attention, self.compile = logprobs, record_attention, compile
        self.stop_reason: str | None = None
        self._prefill: dict[str, torch.Tensor] = {}  # name -> (n_heads, P, P)
        self._rows: dict[str, list[torch.Tensor]] = {}  # name -> one (n_heads, pos+1) row per decode step

    def _forward(self, tokens: torch.Tensor, pos: int, cache) -> torch.Tensor:
        """tokens (1, T) at positions pos.. -> last logits (1, V), recording attention if asked."""
        if self.compile:  # fast.CompiledDecoder: eager prefill, then the compiled fixed-shape step
            return cache.prefill(tokens) if pos == 0 else cache.decode(tokens, pos)
        record = {} if self.record_attention else None
        logits = self.model(tokens, pos, cache, record)  # (1, T, V) float32
        if record is not None:
            for name, pattern in record.items():
                if not name.endswith(".attention.pattern"):
                    continue
                pattern = pattern[0].float().cpu()  # (n_heads, T, S)
                if pos == 0:
                    self._prefill[name] = pattern
                    self._rows[name] = []
                else:
                    self._rows[name].append(pattern[:, -1])  # (n_heads, S)
        return logits[:, -1]

    def __iter__(self) -> Iterator[_Chunk]:
        device = _device_of(self.model)
        generator = _generator(self.seed, device)
        holdback = _Holdback(self.tokenizer, self.prompt, self.stop_strings)
        with torch.inference_mode():
            if self.compile:
                from .fast import compiled_decoder

                cache = compiled_decoder(self.model, 1, self.cache_len)
            else:
                cache = self.model.new_cache(1, self.cache_len)
            logits = self._forward(torch.tensor([self.prompt], device=device), 0, cache)  # prefill: (1, V)
        pos = len(self.prompt)
        reason = "context" if self.context_limited else "length"
        fed_last = True  # is the last returned token already inside the cache (and the attention record)?
        for step in range(self.max_new):
            with torch.inference_mode():
                next_token = sample_checked(logits, self.temperature, self.top_k, self.top_p, generator)  # (1,)
                token = int(next_token[0])
                logprob = float(torch.log_softmax(logits[0], dim=-1)[token]) if self.want_logprobs else None
            if token in self.stop_ids:
                reason = "eos"
                break
            chunk, stopped = holdback.push(token, logprob)
            if chunk.tokens or chunk.text:
                yield chunk
            if stopped:
                reason = "stop"
                break
            if step == self.max_new - 1:
                fed_last = False  # no need to run the model on the last token just to sample nothing
                break
            with torch.inference_mode():
                logits = self._forward(next_token.view(1, 1), pos, cache)  # decode: (1, V)
            pos += 1
        if reason != "stop":
            chunk, stopped = holdback.finish()
            reason = "stop" if stopped else reason
            if chunk.tokens or chunk.text:
                yield chunk
        if self.record_attention and not fed_last:
            # One more step, only for the attention explorer: the last token's row of attention.
            with torch.inference_mode():
                self._forward(next_token.view(1, 1), pos, cache)
        self.stop_reason = reason

    def attention(self, n: int) -> dict[str, torch.Tensor]:
        """Recorded attention over the first n positions: name -> (n_heads, n, n) lower-triangular."""
        out = {}
        for name, prefill in self._prefill.items():
            H, P, _ = prefill.shape
            full = torch.zeros(H, n, n)  # (n_heads, S_total, S_total)
            full[:, : min(P, n), : min(P, n)] = prefill[:, :n, :n]
            for j, row in enumerate(self._rows[name]):
                if P + j >= n:
                    break
                full[:, P + j, : P + j + 1] = row  # query position P+j attends keys 0..P+j
            out[name] = full
        return out


class Generation(list):
    """The new token ids, as a plain ``list[int]``, plus how the generation went.

    Being a list, ``generate(model, ids, n, temperature=0)`` can be used directly as the ids.
    Attributes: ``tokens`` (a plain copy of the ids), ``stop_reason`` ("eos": EOS or a stop id
    was sampled, neither is included; "stop": a stop string appeared; "length": max_new_tokens
    reached; "context": the model's max_seq_len reached first), ``text`` (continuation text when a
    tokenizer was given, cut exactly before a stop string, else None), ``logprobs`` (each new
    token's log-probability under the model's raw distribution, as Meta's ``logprobs``; None unless
    asked), ``attention`` (name -> (n_heads, S, S) over prompt + new tokens; None unless asked).
    """

    def __init__(
        self,
        tokens: Iterable[int] = (),
        *,
        stop_reason: str = "length",
        text: str | None = None,
        logprobs: list[float] | None = None,
        attention: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__(tokens)
        self.stop_reason, self.text, self.logprobs, self.attention = stop_reason, text, logprobs, attention

    @property
    def tokens(self) -> list[int]:
        return list(self)

    def __repr__(self) -> str:
        return f"Generation({list.__repr__(self)}, stop_reason={self.stop_reason!r})"


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def generate(
    model,
    prompt_ids,
    max_new_tokens: int,
    temperature: float = 0.6,
    top_p: float | None = 0.9,
    top_k: int | None = None,
    seed: int | None = None,
    stop=None,
    tokenizer=None,
    logprobs: bool = False,
    record_attention: bool = False,
    eos_id: int | None = 2,
    cache_len: int | None = None,
    compile: bool = False,
) -> Generation:
    """New token ids for one prompt (a ``Generation``, which is a ``list[int]``), EOS excluded.

    The prompt is run once (prefill); then each step feeds only the newest token against the KV
    cache, sized to prompt + max_new_tokens (``cache_len`` overrides). Stops at ``eos_id`` (None:
    never), at any id in ``stop``, at a str in ``stop`` (needs ``tokenizer``; the ids returned are
    those whose text lies wholly before the stop string, ``.text`` is cut exactly there), after
    max_new_tokens, or at max_seq_len. ``seed`` makes sampling reproducible (a generator on the
    model's device). ``record_attention`` fills ``.attention`` for the attention explorer.
    ``compile=True`` decodes with the fast path (fast.py: static cache, fixed-shape step,
    torch.compile with CUDA graphs on a GPU); the first call per shape pays the compile time.
    """
    run = _Decoding(
        model,
        prompt_ids,
        max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=stop,
        tokenizer=tokenizer,
        logprobs=logprobs,
        record_attention=record_attention,
        eos_id=eos_id,
        cache_len=cache_len,
        compile=compile,
    )
    tokens: list[int] = []
    lps: list[float] = []
    texts: list[str] = []
    for chunk in run:
        tokens += chunk.tokens
        lps += chunk.logprobs
        texts.append(chunk.text)
    attention = run.attention(len(run.prompt) + len(tokens)) if record_attention else None
    return Generation(
        tokens,
        stop_reason=run.stop_reason,
        text="".join(texts) if tokenizer is not None else None,
        logprobs=lps if logprobs else None,
        attention=attention,
    )


def generate_iter(model, prompt_ids, max_new_tokens: int, **kwargs) -> Iterator[int]:
    """The new token ids one at a time, as they are decoded; same arguments as ``generate``.

    With stop strings, an id is yielded only once it cannot be part of one.
    """
    for chunk in _Decoding(model, prompt_ids, max_new_tokens, **kwargs):
        yield from chunk.tokens


def _encode_prompt(tokenizer, prompt) -> list[int]:
    return tokenizer.encode(prompt, bos=True) if isinstance(prompt, str) else _as_ids(prompt)


class TextStream:
    """An iterator of text pieces that also keeps the ids behind them: ``.tokens``, ``.stop_reason``.

    ``.prompt`` holds the prompt ids; ``.stop_reason`` is set once the stream is exhausted.
    """

    def __init__(self, run: _Decoding):
        self.prompt, self.tokens, self.stop_reason = run.prompt, [], None
        self._run, self._chunks = run, iter(run)

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        for chunk in self._chunks:
            self.tokens += chunk.tokens
            if chunk.text:
                return chunk.text
        self.stop_reason = self._run.stop_reason
        raise StopIteration


def stream(model, tokenizer, prompt_ids, max_new_tokens: int, **kwargs) -> TextStream:
    """Text pieces as they are decoded, never half a UTF-8 character; same arguments as ``generate``.

    The pieces continue the prompt: ``decode(prompt) + "".join(pieces) == decode(prompt + new ids)``
    (so the first piece keeps its leading space), cut exactly before a stop string.
    ``prompt_ids`` may also be a str, encoded with BOS. The returned iterator also collects the
    new ids (``.tokens``) and, at the end, why generation stopped (``.stop_reason``).
    """
    return TextStream(
        _Decoding(model, _encode_prompt(tokenizer, prompt_ids), max_new_tokens, tokenizer=tokenizer, **kwargs)
    )


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 200, **kwargs) -> str:
    """The continuation of ``prompt`` (encoded with BOS) as text; ``prompt + result`` reads as a whole."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a str, got {type(prompt).__name__}; for ids use generate().")
    ids = tokenizer.encode(prompt, bos=True)
    return generate(model, ids, max_new_tokens, tokenizer=tokenizer, **kwargs).text


def fit_dialog(tokenizer, dialog, max_prompt_tokens: int) -> tuple[list, int]:
    """Drop the oldest (user, assistant) turns until the encoded dialog fits max_prompt_tokens.

    The system message stays (it is merged into the first remaining user message). Returns
    (the shortened dialog, the number of turns dropped); the input is not modified.
    """
    from ..text.chat import encode_dialog

    dialog = list(dialog)
    n_tokens = len(encode_dialog(tokenizer, dialog))  # validates the dialog
    system = dialog[:1] if dialog[0]["role"] == "system" else []
    rest = dialog[len(system) :]
    dropped = 0
    while n_tokens > max_prompt_tokens:
        if len(rest) - 2 * dropped <= 1:
            raise ValueError(
                f"the last user message{' with the system prompt' if system else ''} alone takes "
                f"{n_tokens} tokens, more than the {max_prompt_tokens} available; shorten it."
            )
        dropped += 1
        n_tokens = len(encode_dialog(tokenizer, system + rest[2 * dropped :]))
    return system + rest[2 * dropped :], dropped


def chat(
    model,
    tokenizer,
    dialog,
    max_new_tokens: int | None = None,
    temperature: float = 0.6,
    top_p: float | None = 0.9,
    **kwargs,
) -> str:
    """The assistant's reply to a Llama-2-chat dialog (ending with the user), up to EOS.

    The dialog is encoded with ``chat.encode_dialog`` (Meta's format); ``max_new_tokens`` None means
    up to the end of the context, as Meta's default. Too long a dialog raises ValueError: shorten it
    first with ``fit_dialog``. The reply is decoded as Meta's ``decode(new ids)`` (no leading space).
    """
    from ..text.chat import encode_dialog

    ids = encode_dialog(tokenizer, dialog)
    if max_new_tokens is None:
        max_new_tokens = max(model.args.max_seq_len - len(ids), 1)  # a full context raises below
    kwargs.setdefault("eos_id", tokenizer.eos_id)
    text = generate(
        model, ids, max_new_tokens, temperature=temperature, top_p=top_p, tokenizer=tokenizer, **kwargs
    ).text
    return text[1:] if text.startswith(" ") else text  # the first piece's "▁" follows "[/INST]"


# ---------------------------------------------------------------------------------------------
