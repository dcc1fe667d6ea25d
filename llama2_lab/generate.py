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

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Device and dtype
# ---------------------------------------------------------------------------------------------
DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``prefer`` if given (and available), else cuda → mps → cpu."""
    if prefer is None or prefer == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(prefer)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {prefer!r}; use cpu, cuda, cuda:N, mps or auto.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} asked for, but CUDA is not available here "
                             "(no GPU, or a CPU-only PyTorch build); use cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {prefer!r} asked for, but only {torch.cuda.device_count()} "
                             f"CUDA device(s) exist (cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {prefer!r} asked for, but Apple MPS is not available here; use cpu.")
    elif device.type != "cpu":
        raise ValueError(f"device {prefer!r} is not supported; use cpu, cuda, cuda:N or mps.")
    return device


def resolve_dtype(name_or_dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """A float dtype from a name ("fp32", "bf16", "fp16", ...) or a dtype.

    None picks bfloat16 on a CUDA GPU that supports it (what Llama 2 was trained in) and float32
    everywhere else: CPUs and older GPUs are slow or inexact in 16-bit.
    """
    if name_or_dtype is None or name_or_dtype == "auto":
        device = torch.device(device)
        if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(name_or_dtype, torch.dtype):
        if name_or_dtype in DTYPES.values():
            return name_or_dtype
        raise ValueError(f"dtype {name_or_dtype} is not supported for weights; use float32, bfloat16 or float16.")
    key = str(name_or_dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name_or_dtype!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[key]


# ---------------------------------------------------------------------------------------------
# Sampling: pure functions on logits (..., V)
# ---------------------------------------------------------------------------------------------
def check_sampling(temperature: float, top_k: int | None = None, top_p: float | None = None) -> None:
    """Raise ValueError for sampling settings that mean nothing."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}.")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 or None = no nucleus filter), got {top_p!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (None = no top-k filter), got {top_k!r}.")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf: (..., V) -> (..., V).

    Logits tied with the k-th largest are kept too (as gpt-fast does); k > V keeps everything.
    """
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: the smallest set of most likely tokens whose mass is >= p, renormalised.

    probs (..., V) -> (..., V). The most likely token is always kept. Meta's ``sample_top_p``
    masks with ``> p`` where this uses ``>= p``; they differ only when a prefix sums to exactly p.
    """
    if p >= 1:
        return probs
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # (..., V)
    mass_before = torch.cumsum(probs_sort, dim=-1) - probs_sort  # mass of the more likely tokens
    probs_sort = probs_sort.masked_fill(mass_before >= p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, probs_idx, probs_sort)  # back to vocabulary order
    return kept / kept.sum(dim=-1, keepdim=True)


def sample_top_p(probs: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Meta's nucleus sampling: probs (B, V) -> token ids (B, 1).

    Sort, drop the tail beyond mass p, renormalise, draw, map back to vocabulary ids. Drawing in
    sorted order, as Meta does, means a seed gives the same token as Meta's code would.
    """
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)  # (B, V)
    probs_sum = torch.cumsum(probs_sort, dim=-1)
    mask = probs_sum - probs_sort >= p  # the top token has 0 mass before it: always kept
    probs_sort = probs_sort.masked_fill(mask, 0.0)
    probs_sort = probs_sort / probs_sort.sum(dim=-1, keepdim=True)
    next_token = torch.multinomial(probs_sort, num_samples=1, generator=generator)  # (B, 1) sorted rank
    return torch.gather(probs_idx, -1, next_token)  # (B, 1) vocabulary ids


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(torch.float32)


def filtered_distributions(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                           top_p: float | None = None) -> dict[str, torch.Tensor]:
    """The next-token distribution after each step of the sampler, for the sampling playground.

    logits (..., V) -> {"raw": softmax(logits), "temperature": softmax(logits / T),
    "top_k": after the top-k filter, "top_p": after the nucleus filter}, each (..., V) float32
    and summing to 1. A step that is off (top_k None, top_p None or 1) repeats the previous
    distribution; temperature 0 is a one-hot on the argmax. "top_p" is what ``sample_next`` draws from.
    """
    check_sampling(temperature, top_k, top_p)
    logits = logits.float()
    out = {"raw": torch.softmax(logits, dim=-1)}
    if temperature == 0:
        out["temperature"] = out["top_k"] = out["top_p"] = _one_hot_argmax(logits)
        return out
    scaled = logits / temperature
    out["temperature"] = torch.softmax(scaled, dim=-1)
    out["top_k"] = out["temperature"] if top_k is None else torch.softmax(top_k_filter(scaled, top_k), dim=-1)
    out["top_p"] = out["top_k"] if top_p is None else top_p_filter(out["top_k"], top_p)
    return out


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None) -> torch.Tensor:
    """The distribution the sampler draws from: logits (..., V) -> probs (..., V) float32."""
    return filtered_distributions(logits, temperature, top_k, top_p)["top_p"]


def sample_next(logits: torch.Tensor, temperature: float = 0.6, top_k: int | None = None,
                top_p: float | None = 0.9, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token: logits (B, V) -> ids (B,), or (V,) -> a 0-d id. Temperature 0 is argmax."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    rows = logits.float().reshape(-1, logits.shape[-1]) / temperature  # (B, V)
    if top_k is not None:
        rows = top_k_filter(rows, top_k)
    probs = torch.softmax(rows, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1:
        ids = sample_top_p(probs, top_p, generator)  # (B, 1)
    else:
        ids = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
    return ids.reshape(logits.shape[:-1])


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def _as_ids(prompt_ids, what: str = "prompt") -> list[int]:
    """A list/tuple of ints or a 1-D integer tensor -> list[int]; anything else is a clear error."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() == 2 and prompt_ids.shape[0] == 1:
            prompt_ids = prompt_ids[0]
        if prompt_ids.dim() != 1 or prompt_ids.is_floating_point():
            raise ValueError(f"{what} must be a 1-D list of token ids, got a {prompt_ids.dtype} tensor of shape "
                             f"{tuple(prompt_ids.shape)}; for several prompts use generate_batch.")
        prompt_ids = prompt_ids.tolist()
    if isinstance(prompt_ids, str):
        raise ValueError(f"{what} must be token ids, got a str; encode it first "
                         "(tokenizer.encode(text, bos=True)) or use generate_text.")
    try:
        ids = list(prompt_ids)
    except TypeError:
        raise ValueError(f"{what} must be a list of token ids, got {type(prompt_ids).__name__}.") from None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"{what} must contain only int token ids; for several prompts use generate_batch.")
    if not ids:
        raise ValueError(f"{what} is empty: give at least one token (start with BOS = 1).")
    return ids


def _split_stop(stop, eos_id: int | None) -> tuple[set[int], list[str]]:
    """stop = None | id | str | iterable of ids and strs -> (stop ids incl. EOS, stop strings)."""
    items = [] if stop is None else [stop] if isinstance(stop, (int, str)) else list(stop)
    ids = {eos_id} if eos_id is not None else set()
    strings: list[str] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                raise ValueError("a stop string must not be empty.")
            strings.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            ids.add(item)
        else:
            raise ValueError(f"stop must hold token ids (int) and/or strings, got {item!r}.")
    return ids, strings


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


# ---------------------------------------------------------------------------------------------
# Holding back what may still become a stop string
# ---------------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    """Tokens (and their log-probs) and text released by one decode step."""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    text: str = ""


class _Holdback:
    """Releases generated tokens and their text, holding back anything that may start a stop string.

    Text comes from a ``StreamDecoder`` primed with the prompt, so it continues the prompt (its
    first piece keeps its leading space) and never ends in half a UTF-8 character. A token is
    released once its characters are complete and lie entirely before any stop string; the
    text is cut exactly where the stop string starts. Without a tokenizer tokens pass straight on.
    """

    def __init__(self, tokenizer, prompt: list[int], stop_strings: list[str]):
        self.stops = stop_strings
        self.decoder = None
        if tokenizer is not None:
            from .tokenizer import StreamDecoder

            self.decoder = StreamDecoder(tokenizer)
            for t in prompt:  # context only: the prompt's own text is not emitted
                self.decoder.push(t)
        self.text = ""  # continuation text decoded so far
        self.sent = 0  # characters of self.text already released
        self.pending: list[list] = []  # [token, logprob, end]; end = len(text) once its characters are complete

    def push(self, token: int, logprob: float | None) -> tuple[_Chunk, bool]:
        """Add one sampled token; return what can be released and whether a stop string appeared."""
        if self.decoder is None:
            return _Chunk([token], [logprob]), False
        self.pending.append([token, logprob, None])
        self._add_text(self.decoder.push(token))
        return self._release(final=False)

    def finish(self) -> tuple[_Chunk, bool]:
        """End of generation: release everything that is left (up to a stop string, if one appears)."""
        if self.decoder is None:
            return _Chunk(), False
        self._add_text(self.decoder.flush())
        return self._release(final=True)

    def _add_text(self, piece: str) -> None:
        if piece:
            self.text += piece
            for entry in self.pending:
                if entry[2] is None:
                    entry[2] = len(self.text)

    def _release(self, final: bool) -> tuple[_Chunk, bool]:
        # A stop string cannot start before self.sent: text before it was never a stop prefix.
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        stopped = bool(hits)
        cut = min(hits) if stopped else len(self.text) if final else len(self.text) - self._holdback()
        n = 0
        if final and not stopped:
            n = len(self.pending)
        else:
            while n < len(self.pending) and self.pending[n][2] is not None and self.pending[n][2] <= cut:
                n += 1
        chunk = _Chunk([e[0] for e in self.pending[:n]], [e[1] for e in self.pending[:n]], self.text[self.sent:cut])
        del self.pending[:n]
        self.sent = cut
        return chunk, stopped

    def _holdback(self) -> int:
        """Length of the longest unreleased suffix of the text that is a proper prefix of a stop string."""
        free = len(self.text) - self.sent
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, free), hold, -1):
                if self.text.endswith(s[:k]):
                    hold = k
                    break
        return hold


# ---------------------------------------------------------------------------------------------
# The decode loop
# ---------------------------------------------------------------------------------------------
class _Decoding:
    """One generation for one prompt: validate, prefill, then decode token by token.

    Iterating yields ``_Chunk``s of released tokens/text. Afterwards ``stop_reason`` says why it
    ended and ``attention(n)`` assembles the recorded attention over the first n positions.
    """

    def __init__(self, model, prompt_ids, max_new_tokens: int, *, temperature: float = 0.6,
                 top_p: float | None = 0.9, top_k: int | None = None, seed: int | None = None,
                 stop=None, tokenizer=None, logprobs: bool = False, record_attention: bool = False,
                 eos_id: int | None = 2, cache_len: int | None = None, compile: bool = False):
        check_sampling(temperature, top_k, top_p)
        if compile and record_attention:
            raise ValueError("record_attention needs the eager path (the compiled step cannot hand back "
                             "attention probabilities); use compile=False to inspect attention.")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}.")
        self.prompt = _as_ids(prompt_ids)
        self.stop_ids, self.stop_strings = _split_stop(stop, eos_id)
        if self.stop_strings and tokenizer is None:
            raise ValueError(f"stop strings {self.stop_strings!r} need the tokenizer to read the text: "
                             "pass tokenizer=..., or give stop token ids instead.")
        P, max_seq_len = len(self.prompt), model.args.max_seq_len
        if P > max_seq_len or (P == max_seq_len and max_new_tokens > 0):
            raise ValueError(f"the prompt has {P} tokens but the model's context is max_seq_len={max_seq_len}: "
                             f"no room for new tokens. Shorten the prompt to at most {max_seq_len - 1} tokens.")
        # Like Meta, generation stops at the end of the context: prompt + new tokens <= max_seq_len.
        self.max_new = min(max_new_tokens, max_seq_len - P)
        self.context_limited = self.max_new < max_new_tokens
        self.cache_len = max(P + self.max_new, 1) if cache_len is None else cache_len
        if self.cache_len < P + self.max_new or self.cache_len > max_seq_len:
            raise ValueError(f"cache_len={cache_len} must be in {P + self.max_new}..{max_seq_len} "
                             f"(prompt {P} + up to {self.max_new} new tokens, at most max_seq_len).")
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
                next_token = sample_next(logits, self.temperature, self.top_k, self.top_p, generator)  # (1,)
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
            full[:, :min(P, n), :min(P, n)] = prefill[:, :n, :n]
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

    def __init__(self, tokens: Iterable[int] = (), *, stop_reason: str = "length", text: str | None = None,
                 logprobs: list[float] | None = None, attention: dict[str, torch.Tensor] | None = None):
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
def generate(model, prompt_ids, max_new_tokens: int, temperature: float = 0.6, top_p: float | None = 0.9,
             top_k: int | None = None, seed: int | None = None, stop=None, tokenizer=None,
             logprobs: bool = False, record_attention: bool = False, eos_id: int | None = 2,
             cache_len: int | None = None, compile: bool = False) -> Generation:
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
    run = _Decoding(model, prompt_ids, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                    seed=seed, stop=stop, tokenizer=tokenizer, logprobs=logprobs,
                    record_attention=record_attention, eos_id=eos_id, cache_len=cache_len, compile=compile)
    tokens: list[int] = []
    lps: list[float] = []
    texts: list[str] = []
    for chunk in run:
        tokens += chunk.tokens
        lps += chunk.logprobs
        texts.append(chunk.text)
    attention = run.attention(len(run.prompt) + len(tokens)) if record_attention else None
    return Generation(tokens, stop_reason=run.stop_reason, text="".join(texts) if tokenizer is not None else None,
                      logprobs=lps if logprobs else None, attention=attention)


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

    def __iter__(self) -> "TextStream":
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
    return TextStream(_Decoding(model, _encode_prompt(tokenizer, prompt_ids), max_new_tokens,
                                tokenizer=tokenizer, **kwargs))


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
    from .chat import encode_dialog

    dialog = list(dialog)
    n_tokens = len(encode_dialog(tokenizer, dialog))  # validates the dialog
    system = dialog[:1] if dialog[0]["role"] == "system" else []
    rest = dialog[len(system):]
    dropped = 0
    while n_tokens > max_prompt_tokens:
        if len(rest) - 2 * dropped <= 1:
            raise ValueError(f"the last user message{' with the system prompt' if system else ''} alone takes "
                             f"{n_tokens} tokens, more than the {max_prompt_tokens} available; shorten it.")
        dropped += 1
        n_tokens = len(encode_dialog(tokenizer, system + rest[2 * dropped:]))
    return system + rest[2 * dropped:], dropped


def chat(model, tokenizer, dialog, max_new_tokens: int | None = None, temperature: float = 0.6,
         top_p: float | None = 0.9, **kwargs) -> str:
    """The assistant's reply to a Llama-2-chat dialog (ending with the user), up to EOS.

    The dialog is encoded with ``chat.encode_dialog`` (Meta's format); ``max_new_tokens`` None means
    up to the end of the context, as Meta's default. Too long a dialog raises ValueError: shorten it
    first with ``fit_dialog``. The reply is decoded as Meta's ``decode(new ids)`` (no leading space).
    """
    from .chat import encode_dialog

    ids = encode_dialog(tokenizer, dialog)
    if max_new_tokens is None:
        max_new_tokens = max(model.args.max_seq_len - len(ids), 1)  # a full context raises below
    kwargs.setdefault("eos_id", tokenizer.eos_id)
    text = generate(model, ids, max_new_tokens, temperature=temperature, top_p=top_p,
                    tokenizer=tokenizer, **kwargs).text
    return text[1:] if text.startswith(" ") else text  # the first piece's "▁" follows "[/INST]"


# ---------------------------------------------------------------------------------------------
# Several prompts at once
# ---------------------------------------------------------------------------------------------
def generate_batch(model, prompts: Sequence, max_new_tokens: int, temperature: float = 0.6,
                   top_p: float | None = 0.9, top_k: int | None = None, seed: int | None = None,
                   stop=None, eos_id: int | None = 2) -> list[list[int]]:
    """New ids for each of several prompts of different lengths, decoded together (Meta's approach).

    Prompts are right-padded into one (B, total_len) grid. Decoding starts at the shortest prompt's
    end; at each position a sequence still inside its prompt keeps its prompt token, the others get
    the sampled one. Every row sits at the same positions, so one KV cache and one start_pos serve
    all, and no padding is ever attended to (causality hides the positions not yet filled). Each
    sequence stops at its own EOS / stop id; ``stop`` takes token ids only here.
    """
    check_sampling(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}.")
    if isinstance(prompts, (str, torch.Tensor)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists.")
    prompts = [_as_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]
    stop_ids, stop_strings = _split_stop(stop, eos_id)
    if stop_strings:
        raise ValueError("generate_batch stops on token ids only; for stop strings call generate() per prompt.")
    max_seq_len = model.args.max_seq_len
    lengths = [len(p) for p in prompts]
    for i, n in enumerate(lengths):
        if n > max_seq_len or (n == max_seq_len and max_new_tokens > 0):
            raise ValueError(f"prompt {i} has {n} tokens but the model's context is max_seq_len={max_seq_len}: "
                             f"no room for new tokens. Shorten it to at most {max_seq_len - 1} tokens.")
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    B, min_len = len(prompts), min(lengths)
    total_len = min(max_seq_len, max(lengths) + max_new_tokens)
    device = _device_of(model)
    generator = _generator(seed, device)
    with torch.inference_mode():
        tokens = torch.zeros(B, total_len, dtype=torch.long, device=device)  # (B, total_len), 0 = not yet filled
        in_prompt = torch.zeros(B, total_len, dtype=torch.bool, device=device)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = torch.tensor(p, device=device)
            in_prompt[i, : len(p)] = True
        end = torch.tensor([min(n + max_new_tokens, total_len) for n in lengths], device=device)  # (B,) exclusive
        stop_tensor = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        cache = model.new_cache(B, total_len)
        prev = 0
        for cur in range(min_len, total_len):
            logits = model(tokens[:, prev:cur], prev, cache)[:, -1]  # (B, V): prefill first, then one step
            sampled = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            new = torch.where(in_prompt[:, cur], tokens[:, cur], sampled)  # keep prompt tokens where they exist
            tokens[:, cur] = new
            done |= ~in_prompt[:, cur] & torch.isin(new, stop_tensor)
            done |= cur + 1 >= end
            prev = cur
            if bool(done.all()):
                break
        rows = tokens.tolist()
    out = []
    for i, n in enumerate(lengths):
        new = rows[i][n : min(int(end[i]), prev + 1)]
        for j, t in enumerate(new):
            if t in stop_ids:
                new = new[:j]
                break
        out.append(new)
    return out
