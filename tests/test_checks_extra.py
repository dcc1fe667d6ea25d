"""The checks of notebooks 01, 07, 08 and 09: the package's own code passes, every known mistake is named,
and a skeleton that still raises NotImplementedError is reported as not written (and the package is used)."""

import pytest
import torch

from llama2_lab import inference as G
from llama2_lab.course import checks
from llama2_lab.course.checks import builds as builds_checks
from llama2_lab.course.checks import chat as chat_checks
from llama2_lab.course.checks import gatt as gatt_checks
from llama2_lab.course.checks import harness as harness_checks
from llama2_lab.course.checks import sampling as sampling_checks
from llama2_lab.course.checks import training as training_checks
from llama2_lab.experiments import gatt
from llama2_lab.text import chat


def _todo(*args, **kwargs):
    raise NotImplementedError("TODO: write this")


@pytest.fixture(scope="module")
def tok():
    return builds_checks._default_tokenizer()


def test_use_and_not_written(capsys, tok):
    r = checks.check_chat_encoder(_todo, tok)
    assert not r.passed and r.not_written
    out = capsys.readouterr().out
    assert out.strip() == (
        "chat encoder: not written yet — fill in the TODO cell above; the rest of this notebook "
        "uses the package's chat encoder."
    )
    assert checks.use(r, "mine", "package", "chat encoder") == "package"
    assert capsys.readouterr().out.strip() == "Using the package's chat encoder (yours is not written yet)."
    bad = checks.check_chat_encoder(chat_checks._chat_variant("no_eos"), tok, verbose=False)
    assert checks.use(bad, "mine", "package", "chat encoder") == "package"
    assert "did not pass its check" in capsys.readouterr().out
    good = checks.check_chat_encoder(chat.encode_dialog, tok, verbose=False)
    assert checks.use(good, "mine", "package", "chat encoder") == "mine"
    assert capsys.readouterr().out.strip() == "Using your chat encoder."


def test_a_real_error_is_not_not_written(tok):
    def broken(tokenizer, dialog):
        return [tokenizer.bos_id] + undefined_name  # noqa: F821

    r = checks.check_chat_encoder(broken, tok, verbose=False)
    assert not r.passed and not r.not_written and r.mistake == "exception" and "NameError" in r.hint


@pytest.mark.parametrize("key", [k for k, _ in chat_checks._CHAT_MISTAKES])
def test_chat_encoder_mistakes(tok, key):
    assert checks.check_chat_encoder(chat.encode_dialog, tok, verbose=False).passed
    r = checks.check_chat_encoder(chat_checks._chat_variant(key), tok, verbose=False)
    assert not r.passed and r.mistake == key


def test_sampling_filters():
    assert checks.check_temperature(lambda l, T: torch.softmax(l / T, -1), verbose=False).passed
    assert checks.check_temperature(lambda l, T: torch.softmax(l, -1) / T, verbose=False).mistake == "after_softmax"
    assert checks.check_temperature(lambda l, T: torch.softmax(l * T, -1), verbose=False).mistake == "times_T"
    assert checks.check_temperature(_todo, verbose=False).not_written
    assert checks.check_top_k(G.top_k_filter, verbose=False).passed

    def exactly_k(l, k):
        idx = torch.topk(l, min(k, l.shape[-1]), -1).indices
        return l.masked_fill(~torch.zeros_like(l, dtype=torch.bool).scatter(-1, idx, True), float("-inf"))

    assert checks.check_top_k(exactly_k, verbose=False).mistake == "ties_dropped"
    zeros = lambda l, k: l.masked_fill(l < torch.topk(l, min(k, l.shape[-1]), -1).values[..., -1:], 0.0)
    assert checks.check_top_k(zeros, verbose=False).mistake == "zero_not_inf"
    assert checks.check_top_p(G.top_p_filter, verbose=False).passed
    for key in ("drops_crossing", "no_renorm", "sorted_order", "ascending"):
        f = sampling_checks._topp_variant(key)
        r = checks.check_top_p(
            lambda p, pp, f=f: f(harness_checks._Case("", torch.float32, {"probs": p, "p": pp})), verbose=False
        )
        assert r.mistake == key


@torch.no_grad()
def _good_generate(model, prompt_ids, n, temperature=0.0, top_k=None, top_p=None, generator=None):
    cache = model.new_cache(batch_size=1, max_len=len(prompt_ids) + n)
    logits = model(torch.tensor([prompt_ids]), start_pos=0, cache=cache)[0, -1]
    pos, out = len(prompt_ids), []
    while True:
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            l = logits / temperature
            l = G.top_k_filter(l, top_k) if top_k else l
            p = torch.softmax(l, -1)
            p = G.top_p_filter(p, top_p) if top_p else p
            nxt = int(torch.multinomial(p, 1, generator=generator))
        out.append(nxt)
        if len(out) == n:
            return out
        logits = model(torch.tensor([[nxt]]), start_pos=pos, cache=cache)[0, -1]
        pos += 1


def test_generate_check():
    assert checks.check_generate(_good_generate, verbose=False).passed

    def no_cache(model, prompt_ids, n, **kw):
        ids, out = list(prompt_ids), []
        for _ in range(n):
            out.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
            ids.append(out[-1])
        return out

    assert checks.check_generate(no_cache, verbose=False).mistake == "no_cache"

    def off_by_one(model, prompt_ids, n, **kw):
        cache = model.new_cache(batch_size=1, max_len=len(prompt_ids) + n + 1)
        logits = model(torch.tensor([prompt_ids]), start_pos=0, cache=cache)[0, -1]
        out = []
        for step in range(n):
            out.append(int(logits.argmax()))
            if len(out) < n:
                logits = model(torch.tensor([[out[-1]]]), start_pos=len(prompt_ids) + step + 1, cache=cache)[0, -1]
        return out

    assert checks.check_generate(off_by_one, verbose=False).mistake == "start_pos"
    assert checks.check_generate(_todo, verbose=False).not_written


@pytest.mark.parametrize("key", [k for k, _ in training_checks._LOSS_MISTAKES])
def test_masked_loss_mistakes(key):
    assert checks.check_masked_loss(lambda m, r, mm: training_checks._loss_reference(m, r, mm), verbose=False).passed
    r = checks.check_masked_loss(
        lambda m, rows, mask: training_checks._loss_reference(m, rows, mask, key), verbose=False
    )
    assert r.mistake == key


@pytest.mark.parametrize("key", [k for k, _ in training_checks._STEP_MISTAKES])
def test_train_step_mistakes(key):
    r = checks.check_train_step(lambda *a: training_checks._step_reference(*a, kind=key), verbose=False)
    assert not r.passed and r.mistake == key


def test_train_step_passes():
    assert checks.check_train_step(training_checks._step_reference, verbose=False).passed
    assert checks.check_train_step(_todo, verbose=False).not_written


@pytest.mark.parametrize("key", [k for k, _ in gatt_checks._GATT_MISTAKES])
def test_gatt_sequence_mistakes(tok, key):
    good = lambda t, s, u, r: gatt.encode_turns(t, s, u, r, sys_turns=(0,), train_turns={len(r) - 1})
    assert checks.check_gatt_sequence(good, tok, verbose=False).passed
    r = checks.check_gatt_sequence(lambda t, s, u, rr: gatt_checks._gatt_variant(t, key, s, u, rr), tok, verbose=False)
    assert r.mistake == key
