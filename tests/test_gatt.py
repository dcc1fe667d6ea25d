"""Ghost Attention pipeline pieces (llama2_lab/gatt.py): sequences and loss masks, batched chat
decoding, rejection sampling, the metrics. Tiny tokenizer and random model: seconds on a CPU."""

import argparse
import math
import random
from pathlib import Path

import pytest
import torch

from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.corpora import dialogues as dlg
from llama2_lab.experiments import gatt
from llama2_lab.text import chat
from llama2_lab.text.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    texts = []
    for d in dlg.dialogues(0, 150, 3) + dlg.dialogues(1, 40, 3, "test"):
        texts.append(d.system)
        texts += [q.text for q in d.questions] + d.oracle_replies() + d.plain_replies()
    texts += ["[INST] <<SYS>> <</SYS>> [/INST]"] * 5
    return train_tokenizer(texts, 400)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=len(tok), multiple_of=16, max_seq_len=512)
    return Transformer(args).init_weights(std=0.3, seed=0).eval()  # large std: peaky, varied logits


def dialogue(n=4, seed=0, split="train"):
    rng = random.Random(seed)
    cs = (dlg.Constraint("persona", "Lily" if split == "train" else "Clara"), dlg.Constraint("caps"))
    return dlg.make_dialogue(rng, n, split, constraints=cs)


def masked_text(tok, ids, mask):
    """Decode each maximal run of masked tokens separately (EOS shown as <eos>)."""
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [
        tok.decode([i for i in r if i != tok.eos_id]).strip() + ("<eos>" if r[-1] == tok.eos_id else "") for r in runs
    ]


# ---- sequences and masks ------------------------------------------------------------------------
def test_pairwise_encoding_is_metas_encoding(tok):
    d = dialogue()
    ids, mask = gatt.encode_turns(tok, d.system, [q.text for q in d.questions], d.oracle_replies())
    assert (ids, mask) == chat.encode_training_dialog(tok, d.messages(d.oracle_replies()))
    prompt, _ = gatt.encode_turns(tok, d.system, [q.text for q in d.questions], d.oracle_replies()[:-1])
    assert prompt == chat.encode_dialog(tok, d.messages(d.oracle_replies()[:-1]))


def test_gatt_sequence_has_instruction_only_in_turn_one_and_loss_only_on_last_reply(tok):
    d = dialogue(4)
    replies = d.oracle_replies()
    ids, mask = gatt.gatt_sequence(tok, d, replies)
    turns = [t for t in tok.decode(ids).split("[INST]") if t.strip()]
    assert len(turns) == 4
    assert "<<SYS>>" in turns[0] and d.system in turns[0]
    assert not any("<<SYS>>" in t or d.system in t for t in turns[1:])
    # every earlier (constrained, sampled) reply is in the input but masked out
    assert all(r in tok.decode(ids) for r in replies)
    assert masked_text(tok, ids, mask) == [replies[-1] + "<eos>"]
    assert ids[-1] == tok.eos_id and mask[-1] == 1


def test_gatt_sequence_loss_all_trains_every_reply_and_equals_the_last_reply_loss_on_each_prefix(tok):
    d = dialogue(3)
    replies = d.oracle_replies()
    ids, mask = gatt.gatt_sequence(tok, d, replies, loss="all")
    assert masked_text(tok, ids, mask) == [r + "<eos>" for r in replies]
    # the same tokens and the same targets as the three prefixes, each with the loss on its last reply
    prefixes = [gatt.gatt_sequence(tok, d, replies[:n]) for n in (1, 2, 3)]
    assert prefixes[-1][0] == ids
    union = [max(m[i] if i < len(m) else 0 for _, m in prefixes) for i in range(len(ids))]
    assert union == mask
    with pytest.raises(ValueError, match="'last' or 'all'"):
        gatt.gatt_sequence(tok, d, replies, loss="every")


def test_plain_and_baseline_masks(tok):
    d = dialogue(4)
    ids, mask = gatt.plain_sequence(tok, d, 3)
    assert "<<SYS>>" not in tok.decode(ids)
    assert masked_text(tok, ids, mask) == [r + "<eos>" for r in d.plain_replies()[:3]]
    ids, mask = gatt.baseline_sequence(tok, d, 3)  # instruction in turn 3, plain history before
    turns = [t for t in tok.decode(ids).split("[INST]") if t.strip()]
    assert ["<<SYS>>" in t for t in turns] == [False, False, True]
    assert d.plain_replies()[0] in turns[0]
    assert masked_text(tok, ids, mask) == [dlg.apply_constraints(d.constraints, d.questions[2]) + "<eos>"]


def test_upper_bound_rendering_repeats_the_instruction(tok):
    d = dialogue(3)
    ids, _ = gatt.encode_turns(tok, d.system, [q.text for q in d.questions], d.oracle_replies()[:2], sys_turns=range(3))
    assert tok.decode(ids).count("<<SYS>>") == 3


def test_fit_turns_drops_last_turns_to_fit(tok):
    d = dialogue(12)
    seq, n = gatt._fit_turns(lambda n: gatt.plain_sequence(tok, d, n), 12, 120)
    assert len(seq[0]) <= 120 and n < 12 and seq == gatt.plain_sequence(tok, d, n)


def test_training_sets_match_in_count_and_use_heldout_free_dialogues(tok):
    cfg = gatt.GattConfig(n_dialogues=12, max_turns=4, max_train_tokens=300)
    shared, base = gatt.baseline_set(tok, cfg, 0)
    g, stats = gatt.gatt_set(tok, cfg, 0)
    assert len(shared) == len(base) == len(g) == 12 and stats["turns_kept"] == stats["turns_asked"]
    # the arms see the same dialogues: GAtt sequence i and shared sequence i ask the same questions
    for (gi, _), (si, _) in zip(g, shared):
        first_user = lambda ids: tok.decode(ids).split("[/INST]")[0].split("<</SYS>>")[-1].split("[INST]")[-1].strip()
        assert first_user(gi) == first_user(si)
    # stage 1 draws other dialogues than stage 2
    assert gatt.baseline_set(tok, cfg, 0, stage=1)[0] != shared
    text = " ".join(tok.decode(ids) for ids, _ in shared + base + g)
    held = {v for vs in dlg.HELDOUT.values() for v in vs}
    assert not any(f" {h} " in f" {text} " or f" {h}." in text for h in held)


# ---- rejection sampling --------------------------------------------------------------------------
class StubSampler:
    """Candidate 0 ignores the instruction, candidate 1 obeys it (the oracle); at `fail_turn`
    nothing obeys. Records what it was asked to keep."""

    def __init__(self, dialogues, fail_turn=None):
        self.ds, self.fail_turn, self.kept = dialogues, fail_turn, []

    def propose(self, turn, alive):
        out = []
        for d in self.ds:
            q = d.questions[min(turn, len(d.questions) - 1)]
            good = q.plain if turn == self.fail_turn else dlg.apply_constraints(d.constraints, q)
            out.append([q.plain, good, "noise"])
        return out

    def keep(self, choice, forced=None):
        self.kept.append(choice)
        self.forced = forced


def test_rejection_sampling_keeps_only_passing_candidates():
    ds = [dialogue(4, s) for s in range(3)]
    stub = StubSampler(ds)
    kept = gatt.rejection_sample(stub, ds, 3)
    assert kept == [d.oracle_replies() for d in ds]
    assert stub.kept == [[1, 1, 1]] * 4
    for d, rs in zip(ds, kept):
        assert all(gatt.accept(d, q, r) for q, r in zip(d.questions, rs))


def test_choose_keeps_only_replies_that_obey_and_answer_right():
    d = dlg.Dialogue(
        (dlg.Constraint("caps"),), False, [dlg.Question("math", "What is 2 plus 3?", "2 plus 3 is 5.", "5.", "5")]
    )
    q = d.questions[0]
    assert gatt.choose(d, q, ["2 plus 3 is 5.", "2 PLUS 3 IS 6.", "2 PLUS 3 IS 5."]) == 2
    assert gatt.choose(d, q, ["2 plus 3 is 5.", "2 PLUS 3 IS 6."]) is None  # obeys with a wrong sum: rejected
    # the reward hack of an invented name: no persona was set, so "I am Felix" is a wrong answer
    name = dlg.Question("name", dlg.NAME_QUESTION, "I am a helpful assistant.", "An assistant.")
    d2 = dlg.Dialogue((dlg.Constraint("caps"),), False, [name])
    assert gatt.choose(d2, name, ["HELLO! I AM FELIX.", "I AM A HELPFUL ASSISTANT."]) == 1


def test_rejection_sampling_stops_a_dialogue_where_nothing_passes():
    ds = [dialogue(4, s) for s in range(2)]
    kept = gatt.rejection_sample(StubSampler(ds, fail_turn=2), ds, 3)
    assert [len(k) for k in kept] == [2, 2]
    with pytest.raises(ValueError, match="expected 2"):
        gatt.rejection_sample(StubSampler(ds), ds, 2)
    # with a fallback the dialogue goes on with the fallback reply, and the count says so
    stats = {}
    kept = gatt.rejection_sample(StubSampler(ds, fail_turn=2), ds, 3, lambda d, q: "FALLBACK", stats)
    assert [k[2] for k in kept] == ["FALLBACK"] * 2 and [len(k) for k in kept] == [4, 4]
    assert stats == {"sampled": 6, "fallback": 2, "failed": 0}


def test_model_sampler_handles_ragged_dialogues_and_continues_from_the_kept_reply(model, tok):
    # a persona and no name question, and the oracle reply where no candidate is right: every turn is kept
    rng = random.Random(0)
    ds = [
        dlg.Dialogue((dlg.Constraint("persona", "Tom"),), False, [dlg.make_question(rng, "color") for _ in range(n)])
        for n in (2, 1, 3)
    ]
    kept = gatt.sample_gatt_replies(model, tok, ds, n_candidates=2, max_new=4, seed=0, batch_size=2, fallback=True)
    assert [len(k) for k in kept] == [2, 1, 3]
    # after keep(), every candidate row continues from the kept reply: sample turn 1, keep candidate 1,
    # decode turn 2 greedily; both rows must equal one chat that had candidate 1's tokens as history
    d = ds[2]
    sampler = gatt.ModelSampler(
        model, tok, [d], n_candidates=2, temperature=1.5, max_new=4, generator=torch.Generator().manual_seed(1)
    )
    sampler.propose(0, [True])
    row1 = sampler.last_ids[1]
    assert sampler.last_ids[0] != row1  # the two candidates differ, so keep() matters
    sampler.keep([1])
    sampler.temperature = 0.0
    second = sampler.propose(1, [True])[0]
    cb = gatt.ChatBatch(model, 1, 200)
    cb.feed([gatt._turn_ids(tok, d.system, d.questions[0].text) + row1 + [tok.eos_id]])
    ref = cb.reply(cb.feed([gatt._turn_ids(tok, d.system, d.questions[1].text)]), 4)[0]
    assert second == [gatt._decode(tok, ref)] * 2


def test_forced_fallback_reply_replaces_the_candidates_in_the_history(model, tok):
    d = dialogue(2)
    sampler = gatt.ModelSampler(
        model, tok, [d], n_candidates=2, temperature=1.0, max_new=4, generator=torch.Generator().manual_seed(0)
    )
    sampler.propose(0, [True])
    forced = d.oracle_replies()[0]
    sampler.keep([None], {0: forced})
    sampler.temperature = 0.0
    second = sampler.propose(1, [True])[0]
    # reference: a fresh chat whose turn-1 reply is the forced one, encoded as Meta would
    hist, _ = gatt.encode_turns(tok, d.system, [q.text for q in d.questions], [forced], sys_turns=range(2))
    cb = gatt.ChatBatch(model, 1, len(hist) + 50)
    assert second == [gatt._decode(tok, cb.reply(cb.feed([hist]), 4)[0])] * 2


def test_model_sampler_runs_and_keeps_only_accepted_replies(model, tok):
    ds = [dialogue(n, s) for s, n in enumerate((2, 1, 3))]  # ragged lengths
    kept = gatt.sample_gatt_replies(model, tok, ds, n_candidates=2, max_new=6, seed=0, batch_size=2)
    assert len(kept) == 3 and all(len(k) <= len(d.questions) for k, d in zip(kept, ds))
    for d, rs in zip(ds, kept):
        assert all(gatt.accept(d, q, r) for q, r in zip(d.questions, rs))


# ---- batched decoding equals one sequence at a time ------------------------------------------------
def test_rows_at_their_own_positions_match_the_model_on_ragged_rows(model, tok):
    prompts = [[1, 5, 9, 33, 40, 7], [1, 8, 8], [1, 12, 30, 31]]
    cb = gatt.ChatBatch(model, 3, 64)
    last = cb.feed(prompts)  # (3, V)
    more = cb.feed([[17, 18], [], [19]])
    for b, p in enumerate(prompts):
        ref = model(torch.tensor([p]))[0]
        torch.testing.assert_close(last[b], ref[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(more[0], model(torch.tensor([prompts[0] + [17, 18]]))[0, -1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(more[2], model(torch.tensor([prompts[2] + [19]]))[0, -1], atol=1e-4, rtol=1e-4)


def test_greedy_chats_match_single_sequence_greedy_decoding(model, tok):
    ds = [dialogue(2, s) for s in range(3)]
    replies = gatt.run_chats(model, tok, ds, 2, max_new=5, batch_size=2)
    for d, rs in zip(ds, replies):
        ids = []
        for k in range(2):
            ids += gatt._turn_ids(tok, d.system if k == 0 else None, d.questions[k].text)
            new = []
            for _ in range(6):
                t = int(model(torch.tensor([ids]))[0, -1].argmax())
                if t == tok.eos_id or len(new) == 5:
                    break
                new.append(t)
                ids.append(t)
            ids.append(tok.eos_id)
            assert tok.decode(new).strip() == rs[k]


# ---- loss ------------------------------------------------------------------------------------------
def test_collate_aligns_mask_with_targets_and_masked_loss_averages_trained_tokens():
    x, y, m = gatt.collate([([1, 5, 6, 2], [0, 0, 1, 1]), ([1, 7], [0, 1])])
    assert x.tolist() == [[1, 5, 6], [1, 7, 0]] and y.tolist() == [[5, 6, 2], [7, 0, 0]]
    assert m.tolist() == [[0, 1, 1], [1, 0, 0]]
    logits = torch.randn(2, 3, 10)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(2, 3)
    expected = (ce[0, 1] + ce[0, 2] + ce[1, 0]) / 3
    torch.testing.assert_close(gatt.masked_loss(logits, y, m), expected)


def test_train_sft_lowers_the_masked_loss(tok):
    args = ModelArgs(dim=32, n_layers=1, n_heads=2, vocab_size=len(tok), multiple_of=16, max_seq_len=256)
    m = Transformer(args).init_weights(seed=0)
    d = dialogue(2)
    seqs = [gatt.gatt_sequence(tok, d, d.oracle_replies())] * 4
    losses = gatt.train_sft(m, seqs, steps=12, batch_size=2, lr=2e-2, seed=0)
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0]


# ---- metrics ---------------------------------------------------------------------------------------
def test_wilson_interval():
    p, lo, hi = gatt.wilson(5, 10)
    assert p == 0.5 and math.isclose(lo, 0.2366, abs_tol=1e-3) and math.isclose(hi, 0.7634, abs_tol=1e-3)
    p, lo, hi = gatt.wilson(0, 10)
    assert p == 0 and lo == 0 and math.isclose(hi, 0.2775, abs_tol=1e-3)
    assert gatt.wilson(10, 10)[2] == 1.0 and all(math.isnan(v) for v in gatt.wilson(0, 0))


def test_adherence_table_per_turn_family_and_pooled():
    d = dialogue(3)
    replies = [d.oracle_replies()[0], d.plain_replies()[1], d.oracle_replies()[2]]
    rec = gatt.adherence_records([d], [replies])
    table = gatt.adherence_table(rec, 3)
    assert [r["p"] for r in table["caps"]] == [1.0, 0.0, 1.0]
    assert [r["n"] for r in table["pooled"]] == [1 + (d.questions[k].kind == "name") for k in range(3)]
    assert table["pooled"][1]["p"] == 0.0 and table["pooled"][1]["high"] < 1


def test_span_share_on_a_hand_made_pattern():
    # 2 heads, query at position 9 (10 visible keys), system span = keys 2..4 (3 keys)
    pat = torch.zeros(2, 10)
    pat[0] = 0.1  # uniform head: 0.3 on the span, lift 1
    pat[1, 0], pat[1, 3] = 0.4, 0.6  # sink on BOS + 0.6 on one system token
    share, lift = gatt.span_share(pat, 2, 5, 9)
    assert math.isclose(share, 0.6, abs_tol=1e-6) and math.isclose(lift, 2.0, abs_tol=1e-6)


def test_system_span_and_decision_positions(tok):
    d = dialogue(3)
    replies = d.oracle_replies()
    ids, mask = gatt.encode_turns(tok, d.system, [q.text for q in d.questions], replies)
    lo, hi = gatt.system_span(tok, d)
    span = tok.decode(ids[lo:hi])
    assert lo > 0 and span.strip().startswith("<<SYS>>") and span.strip().endswith("<</SYS>>") and d.system in span
    for k, (first, end) in enumerate(gatt.decision_positions(tok, d, replies)):
        assert (
            tok.decode(ids[first - 8 : first + 1]).strip().endswith("[/INST]")
            and mask[first] == 0
            and mask[first + 1] == 1
        )
        assert ids[end + 2] == tok.eos_id and tok.decode(ids[first + 1 : end + 1]).strip() == replies[k]


def test_attention_metrics_have_layer_by_turn_shape(model, tok):
    att = gatt.attention_to_system(model, tok, [dialogue(3, s) for s in range(2)], 3)
    assert len(att["share"]) == model.args.n_layers and len(att["share"][0]) == 3
    assert all(0 <= s <= 1 for row in att["share"] for s in row)
    amap = gatt.attention_map(model, tok, dialogue(3), dialogue(3).oracle_replies(), bin_size=4)
    n = len(amap["map"])
    assert n == len(amap["map"][0]) and amap["system"][0] < amap["system"][1] <= n


def test_cli_arguments_and_presets(monkeypatch):
    monkeypatch.delenv("LLAMA2_LAB_FAST", raising=False)  # `make test` sets it; the default preset is asserted first
    p = gatt.add_gatt_arguments(argparse.ArgumentParser())
    cfg = gatt.config_from_args(p.parse_args(["--fast", "--mode", "oracle", "--seeds", "3", "4"]))
    assert cfg.mode == "oracle" and cfg.seeds == (3, 4) and cfg.steps == gatt.PRESETS["fast"].steps
    assert gatt.config_from_args(p.parse_args([])).seeds == (0, 1, 2)
    monkeypatch.setenv("LLAMA2_LAB_FAST", "1")
    assert gatt.config_from_args(p.parse_args([])) == gatt.PRESETS["fast"]
    with pytest.raises(ValueError, match="--steps"):
        gatt.config_from_args(p.parse_args(["--steps", "0"]))
    full = gatt.PRESETS["full"]
    assert len(full.seeds) >= 3 and full.eval_dialogues >= 200 and full.eval_turns >= 12


def test_start_from_a_chat_model_replaces_stage_one(tmp_path):
    # The paper samples GAtt data from the latest RLHF model: --start-from names that model.
    p = gatt.add_gatt_arguments(argparse.ArgumentParser())
    sft = Path(__file__).resolve().parents[1] / "assets" / "models" / "llama2-lab-tiny-sft"
    cfg = gatt.config_from_args(p.parse_args(["--fast", "--start-from", str(sft)]))
    assert cfg.stage1 == str(sft)
    with pytest.raises(ValueError, match="not a model folder"):
        gatt.config_from_args(p.parse_args(["--fast", "--start-from", str(tmp_path)]))
