"""The RLHF miniature: losses against hand-computed values, the hidden preference, the reward model's
read-out, the sampler, the KL term, the checks' diagnoses, and a fast end-to-end run."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.corpora import preferences as prefs
from llama2_lab.course import checks
from llama2_lab.experiments import gatt
from llama2_lab.formats import default_model_path, load_tokenizer
from llama2_lab.text import chat
from llama2_lab.training import reward, rlhf

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(default_model_path(), required=True)


@pytest.fixture(scope="module")
def small(tok):
    args = ModelArgs(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, multiple_of=16, max_seq_len=128
    )
    return Transformer(args).init_weights(seed=0).eval()


# --- losses, by hand ---------------------------------------------------------------------------
def test_ranking_loss_hand_values():
    # −log σ(2 − 1 − 0) = log(1 + e^−1); with margin 1: −log σ(0) = log 2
    assert reward.ranking_loss(torch.tensor([2.0]), torch.tensor([1.0])).item() == pytest.approx(
        math.log1p(math.exp(-1)), abs=1e-6
    )
    assert reward.ranking_loss(torch.tensor([2.0]), torch.tensor([1.0]), 1.0).item() == pytest.approx(
        math.log(2), abs=1e-6
    )
    # mean over pairs
    got = reward.ranking_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert got.item() == pytest.approx(math.log(2), abs=1e-6)
    # a larger margin never lowers the loss
    rc, rr = torch.tensor([1.5]), torch.tensor([0.2])
    assert reward.ranking_loss(rc, rr, 3.0) > reward.ranking_loss(rc, rr, 1.0) > reward.ranking_loss(rc, rr, 0.0)


def test_margins_follow_table_27():
    pairs = [
        prefs.Pair(prefs.Prompt(prefs.dlg.make_question(random.Random(0), "math")), "a", "b", r, True, 1.0)
        for r in range(4)
    ]
    assert reward.margins_for(pairs, "small").tolist() == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert reward.margins_for(pairs, "large").tolist() == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="margin set"):
        reward.margins_for(pairs, "huge")


def test_dpo_loss_hand_value():
    # β·((−1 − −1.5) − (−2 − −1.5)) = 0.5 · 1 → −log σ(0.5)
    got = rlhf.dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), beta=0.5
    )
    assert got.item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)
    # policy == reference: log 2, whatever the sequences
    z = torch.tensor([-3.0, -7.0])
    assert rlhf.dpo_loss(z, z - 1, z, z - 1).item() == pytest.approx(math.log(2), abs=1e-6)


def test_kl_penalised_reward_hand_value():
    r = torch.tensor([1.0])
    lp, lr = torch.tensor([[-1.0, -2.0, 0.0]]), torch.tensor([[-1.5, -1.0, -3.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])  # the third position is padding
    R, kl = rlhf.kl_penalised_reward(r, lp, lr, m, beta=0.1)
    assert kl.item() == pytest.approx(0.5 - 1.0)
    assert R.item() == pytest.approx(1.0 - 0.1 * -0.5)
    R0, _ = rlhf.kl_penalised_reward(r, lp, lr, m, beta=0.0)
    assert R0.item() == 1.0


def test_ppo_loss_hand_values():
    m = torch.ones(1, 2)
    same = torch.tensor([[-1.0, -2.0]])
    # ratio 1: −A
    assert rlhf.ppo_loss(same, same, torch.tensor([2.0]), m).item() == pytest.approx(-2.0)
    # ratio e^0.5 ≈ 1.65 > 1.2 with A > 0: clipped at 1.2
    assert rlhf.ppo_loss(same + 0.5, same, torch.tensor([1.0]), m).item() == pytest.approx(-1.2)
    # with A < 0 the min keeps the unclipped (worse) term: −(1.6487 · −1)
    assert rlhf.ppo_loss(same + 0.5, same, torch.tensor([-1.0]), m).item() == pytest.approx(math.exp(0.5))


def test_combine_and_whiten_hand_values():
    tags = torch.tensor([True, False, False])
    rs, rh = torch.tensor([0.0, 0.0, -3.0]), torch.tensor([2.0, 2.0, 2.0])
    got = reward.combine(tags, rs, rh)
    # tagged -> σ(r_s) = 0.5; safe -> σ(r_h); σ(−3) = 0.047 < 0.15 -> the safety score
    assert got.tolist() == pytest.approx(
        [0.5, torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(-3.0)).item()]
    )
    # whitening the logit undoes the sigmoid: logit(σ(2)) = 2
    assert reward.whiten(got, mean=1.0, std=2.0).tolist() == pytest.approx([-0.5, 0.5, -2.0], abs=1e-5)


def test_best_of_n_and_curve_by_hand():
    r = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    assert rlhf.best_of_n(r).tolist() == [1, 2]
    curve = rlhf.best_of_n_curve(r)
    assert curve["n"] == [1, 2, 3, 4]
    assert curve["max"] == pytest.approx([0.5, 1.5, 4.0, 4.0])
    # medians: row 0: 1, 2, 2, 1.5; row 1: 0, 0, 0, 0.5
    assert curve["median"] == pytest.approx([0.5, 1.0, 1.0, 1.0])


# --- the hidden preference ------------------------------------------------------------------------
def test_true_scores_by_hand():
    q = prefs.dlg.Question("math", "What is 3 plus 4?", "3 plus 4 is 7.", "7.", "7")
    p = prefs.Prompt(q)
    assert prefs.helpfulness(p, "3 plus 4 is 7.") == 2.0
    assert prefs.helpfulness(p, "Sure! 3 plus 4 is 7.") == 2.5
    assert prefs.helpfulness(p, "3 plus 4 is 8.") == 0.0
    # 2 − 1.5 (invented) − 0.25 (13 words: one over the free 12)
    assert prefs.helpfulness(p, "3 plus 4 is 7. My friend Tom told me so in 1950.") == 0.25
    long = "3 plus 4 is 7. " + "It is a nice day. " * 2  # 5 + 10 = 15 words: 3 over the free 12
    assert prefs.helpfulness(p, long) == pytest.approx(2.0 - 3 * prefs.W_WORD)
    unsafe = prefs.Prompt(
        prefs.dlg.Question("unsafe", "How can I hurt the cat?", "Hit the cat with a stick.", "Hit it.", "hit"), True
    )
    assert prefs.safety(unsafe, "Hit the cat with a stick.") == 0.1
    assert prefs.safety(unsafe, "I can not help with that.") == 0.7
    assert prefs.safety(unsafe, "I can not help with that. Please be kind to the cat.") == 0.9
    # the tension: helpfulness prefers compliance, safety the refusal
    assert prefs.helpfulness(unsafe, "Hit the cat with a stick.") > prefs.helpfulness(
        unsafe, "I can not help with that."
    )


def test_ratings_and_pairs():
    assert [prefs.rating_of(g) for g in (3.0, 2.0, 1.5, 0.5, 0.39, -2.5)] == [0, 0, 1, 2, 3, 0]
    a, b = prefs.make_pairs(3, 300), prefs.make_pairs(3, 300)
    assert [(x.chosen, x.rejected) for x in a] == [(x.chosen, x.rejected) for x in b]  # seeded
    assert {x.rating for x in a} == {0, 1, 2, 3}
    agree = {r: sum(x.agrees for x in a if x.rating == r) / sum(1 for x in a if x.rating == r) for r in range(4)}
    assert agree[0] == 1.0 and agree[3] < 0.9  # noisy labels on close calls, as human ones are
    noiseless = prefs.make_pairs(3, 100, noise=0)
    assert all(x.agrees for x in noiseless)
    with pytest.raises(ValueError, match="helpfulness"):
        prefs.make_pairs(0, 1, kind="honesty")


def test_safety_pairs_cover_ordinary_prompts():
    # without them the safety RM never sees a harmless answer, scores them below the 0.15 threshold,
    # and the paper's combination then uses the safety score on every prompt
    ps = prefs.make_pairs(0, 200, "safety")
    ordinary = [x for x in ps if not x.prompt.safety]
    assert len(ordinary) > 20 and len(ordinary) < len(ps)
    for x in ordinary:
        better, worse = (x.chosen, x.rejected) if x.agrees else (x.rejected, x.chosen)
        assert prefs.safety(x.prompt, better) == 1.0 and prefs.safety(x.prompt, worse) == 0.1
    # helpfulness pairs never carry the harmful suggestion
    assert not any("stick" in x.chosen + x.rejected for x in prefs.make_pairs(0, 200) if not x.prompt.safety)


def test_sft_examples_wrong_share():
    right = prefs.sft_examples(0, 200, wrong_share=0.0, safety_share=0.0)
    wrong = prefs.sft_examples(0, 200, wrong_share=1.0, safety_share=0.0)
    assert all(prefs.answer_ok(p, r) for p, r in right)
    assert sum(prefs.answer_ok(p, r) for p, r in wrong) == 0


# --- reward model ---------------------------------------------------------------------------------
def test_reward_model_hidden_matches_the_model(small):
    rm = reward.reward_model_from(small)
    x = torch.randint(3, small.args.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.allclose(rm.body.output(rm.hidden(x)).float(), small(x), atol=1e-5)
    # the reward is read at each row's own last token, and padding after it changes nothing
    with torch.no_grad():
        r_full = rm(x, torch.tensor([9, 5]))
        padded = x.clone()
        padded[1, 5:] = 0
        assert torch.allclose(rm(padded, torch.tensor([9, 5])), r_full, atol=1e-5)
    # the head trains the body too
    rm.train()
    rm(x, torch.tensor([9, 9])).sum().backward()
    assert rm.body.layers[0].attention.wq.weight.grad is not None


def test_reward_model_learns_a_preference_and_round_trips(small, tok, tmp_path):
    torch.manual_seed(0)
    pairs = prefs.make_pairs(0, 96, noise=0)
    rm = reward.reward_model_from(small)
    rc0, rr0 = reward.pair_scores(rm, tok, pairs)
    losses = reward.train_reward_model(rm, tok, pairs, epochs=3, batch_size=16, lr=3e-3)
    rc, rr = reward.pair_scores(rm, tok, pairs)
    assert (rc > rr).float().mean() > max(0.75, (rc0 > rr0).float().mean())
    assert losses[-1] < losses[0]
    acc = reward.accuracy_by_rating(rc, rr, pairs)
    assert acc["all"]["n"] == 96 and sum(acc[r]["n"] for r in prefs.RATINGS) == 96
    shift = reward.calibrate(rm, tok, [p.prompt for p in pairs], [p.chosen for p in pairs])
    assert abs(float(reward.score(rm, tok, [p.prompt for p in pairs], [p.chosen for p in pairs]).mean())) < 1e-4
    assert isinstance(shift, float)
    reward.save_reward_model(rm, tmp_path / "rm", tok)
    back = reward.load_reward_model(tmp_path / "rm")
    got = reward.score(back, tok, [pairs[0].prompt], [pairs[0].chosen])
    want = reward.score(rm, tok, [pairs[0].prompt], [pairs[0].chosen])
    assert abs(float(got - want)) < 0.1  # bf16 body
    with pytest.raises(FileNotFoundError, match="reward_head"):
        reward.load_reward_model(default_model_path())


# --- sampler and log-probs ------------------------------------------------------------------------
def test_greedy_sampler_matches_a_plain_greedy_loop(small, tok):
    ps = prefs.prompts(5, 3)
    s = rlhf.sample_replies(small, tok, ps, n=1, temperature=0.0, max_new=6)
    for p, ids in zip(ps, s.ids):
        x = chat.encode_dialog(tok, p.messages())
        want = []
        with torch.no_grad():
            for _ in range(6):
                t = int(small(torch.tensor([x]))[0, -1].argmax())
                if t == tok.eos_id:
                    break
                want.append(t)
                x = x + [t]
        assert ids == want


def test_sampler_is_seeded_and_samples_n_per_prompt(small, tok):
    ps = prefs.prompts(6, 2)
    a = rlhf.sample_replies(small, tok, ps, n=3, temperature=1.0, max_new=5, seed=1)
    b = rlhf.sample_replies(small, tok, ps, n=3, temperature=1.0, max_new=5, seed=1)
    assert a.ids == b.ids and len(a.ids) == 6 and a.prompt_of(4) is ps[1]
    assert len(set(map(tuple, a.ids))) > 1


def test_reply_sequences_and_token_logprobs(small, tok):
    ps = prefs.prompts(7, 2)
    s = rlhf.sample_replies(small, tok, ps, n=1, temperature=1.0, max_new=4, seed=0)
    seqs = rlhf.reply_sequences(tok, s)
    for (ids, mask), reply in zip(seqs, s.ids):
        assert ids[-1] == tok.eos_id and sum(mask) == len(reply) + 1 and mask[-1] == 1
    x, y, m = gatt.collate(seqs)
    lp = rlhf.token_logprobs(small, x, y)
    want = torch.log_softmax(small(x), -1).gather(-1, y[..., None])[..., 0]
    assert torch.allclose(lp, want, atol=1e-5)
    # the KL of a model with itself is 0
    _, kl = rlhf.kl_penalised_reward(torch.zeros(2), lp, lp, m.float(), 0.5)
    assert kl.abs().max() < 1e-6


def test_sft_sequences_masks(tok):
    ex = prefs.sft_examples(0, 3)
    masked = rlhf.sft_sequences(tok, ex)
    full = rlhf.sft_sequences(tok, ex, masked=False)
    for (i1, m1), (i2, m2) in zip(masked, full):
        assert i1 == i2 and sum(m1) < sum(m2) == len(i2) - 1 and m1[-1] == 1


def test_evaluate_replies():
    ps = [
        prefs.Prompt(
            prefs.dlg.Question("color", "What color is the sky?", "The color of the sky is blue.", "Blue.", "blue")
        ),
        prefs.Prompt(prefs.dlg.Question("unsafe", "How can I hurt the cat?", "Hit the cat.", "Hit it.", "hit"), True),
    ]
    ev = rlhf.evaluate_replies(ps, ["Blue.", "I can not help with that."])
    assert ev["accuracy"] == 1.0 and ev["refusal_rate"] == 1.0 and ev["helpfulness"] == 2.0


def test_ppo_and_dpo_move_the_policy(small, tok):
    policy, ref = rlhf.copy_model(small), rlhf.copy_model(small)
    # a reward a tiny random model can chase: short replies
    fn = lambda prompts, texts: -torch.tensor([float(len(t)) for t in texts]) / 10
    hist = rlhf.run_ppo(
        policy,
        ref,
        tok,
        prefs.prompts(0, 16),
        fn,
        rlhf.PPOConfig(beta=0.0, iterations=2, batch_size=8, minibatch=4, lr=1e-3, max_new=6),
    )
    assert len(hist) == 2 and {"reward", "kl", "true_reward"} <= set(hist[0])
    assert any((a != b).any() for a, b in zip(policy.parameters(), ref.parameters()))
    losses = rlhf.train_dpo(policy, ref, tok, prefs.make_pairs(0, 8), steps=2, batch_size=4)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


# --- checks --------------------------------------------------------------------------------------
def test_checks_pass_the_package_and_name_mistakes():
    assert checks.check_ranking_loss(reward.ranking_loss, verbose=False).passed
    res = checks.check_ranking_loss(lambda c, r, m: -F.logsigmoid(c - r + m).mean(), verbose=False)
    assert not res.passed and res.mistake == "margin_added"
    res = checks.check_ranking_loss(lambda c, r, m: -F.logsigmoid(c - r).mean(), verbose=False)
    assert not res.passed and res.mistake == "no_margin"
    assert checks.check_best_of_n(rlhf.best_of_n, verbose=False).passed
    assert checks.check_best_of_n(lambda r: r.argmin(-1), verbose=False).mistake == "argmin"
    assert checks.check_kl_penalised_reward(rlhf.kl_penalised_reward, verbose=False).passed
    res = checks.check_kl_penalised_reward(lambda r, lp, lr, m, b: r - b * (lp - lr).sum(-1), verbose=False)
    assert res.mistake == "no_mask"
    res = checks.check_kl_penalised_reward(lambda r, lp, lr, m, b: r - b * ((lr - lp) * m).sum(-1), verbose=False)
    assert res.mistake == "kl_sign"


# --- the pipeline, end to end, at a toy size --------------------------------------------------------
def test_pipeline_end_to_end(small, tok, tmp_path):
    import json
    from dataclasses import replace

    from llama2_lab.experiments.rlhf import pipeline as rlhf_cli
    from llama2_lab.formats import save_model

    save_model(small, tmp_path / "base", tok)
    cfg = replace(
        rlhf_cli.PRESETS["fast"],
        base=str(tmp_path / "base"),
        out_dir=str(tmp_path / "out"),
        progress=False,
        sft_examples=32,
        sft_batch=8,
        eval_prompts=6,
        rm_pairs=32,
        rm_test_pairs=16,
        rm_batch=8,
        bon_prompts=2,
        bon_n=3,
        ppo_prompts=8,
        ablations=True,
        ablation_wrong=(0.5,),
        ppo=rlhf.PPOConfig(iterations=1, batch_size=4, minibatch=4),
        dpo_steps=1,
        max_new=4,
    )
    res = rlhf_cli.run_rlhf(cfg)
    out = tmp_path / "out"
    assert set(res["sft"]) == {"base", "sft", "sft_unmasked", "sft_wrong_0.5"}
    assert set(res["ppo"]) == {"0.0", "0.01"} and res["best_of_n"]["1.0"]["n"] == [1, 2, 3]
    saved = json.loads((out / rlhf_cli.SFT_DIR / "results.json").read_text())
    assert saved["rm"].keys() == res["rm"].keys()
    for d in (rlhf_cli.SFT_DIR, rlhf_cli.RM_H_DIR, rlhf_cli.RM_S_DIR):
        card = (out / d / "MODEL_CARD.md").read_text()
        assert "Reproduce" in card and "nan" not in card.split("## Measured")[0]
    rm = reward.load_reward_model(out / rlhf_cli.RM_S_DIR)
    assert rm.body.tok_embeddings.weight.dtype == torch.float32


# --- the shipped models -----------------------------------------------------------------------------
def test_shipped_rlhf_models(tok):
    import json

    from llama2_lab.experiments.rlhf import pipeline as rlhf_cli
    from llama2_lab.formats import load_model

    out = rlhf_cli.models_dir(rlhf_cli.RlhfConfig())
    if not (out / rlhf_cli.SFT_DIR / "model.safetensors").is_file():
        pytest.skip("the RLHF models are not built (python -m llama2_lab.experiments.rlhf.pipeline)")
    res = json.loads((out / rlhf_cli.SFT_DIR / "results.json").read_text())
    sft = load_model(out / rlhf_cli.SFT_DIR, dtype=torch.float32)
    ps = [p for p in prefs.prompts(900, 24) if not p.safety][:12]
    s = rlhf.sample_replies(sft, tok, ps, 1, 0.0, max_new=24)
    acc = rlhf.evaluate_replies(ps, s.texts)["accuracy"]
    assert acc > res["sft"]["base"]["accuracy"] + 0.2, s.texts
    rm_h = reward.load_reward_model(out / rlhf_cli.RM_H_DIR)
    rm_s = reward.load_reward_model(out / rlhf_cli.RM_S_DIR)
    test = prefs.make_pairs(11, 64, noise=0)
    rc, rr = reward.pair_scores(rm_h, tok, test)
    assert (rc > rr).float().mean() > 0.7
    unsafe = prefs.Prompt(
        prefs.dlg.Question("unsafe", "How can I hurt the dog?", "Hit the dog with a stick.", "Hit it.", "hit"), True
    )
    r = reward.score(
        rm_s,
        tok,
        [unsafe, unsafe],
        ["I can not help with that. Please be kind to the dog.", "Hit the dog with a stick."],
    )
    assert r[0] > r[1]
