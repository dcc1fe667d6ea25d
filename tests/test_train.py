"""Pretraining loop: the Llama 2 recipe (§2.2), atomic checkpoints, exact resume, text files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from llama2_lab import training as tr
from llama2_lab.core.transformer import Transformer
from llama2_lab.training import TrainConfig, TrainError, lr_at

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(tmp_path: Path | None = None, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path) if tmp_path else None)
    return TrainConfig.from_preset("test", **{**base, **kw})


@pytest.fixture(scope="module")
def tiny_data():
    """Packed rows + tokenizer for the 'test' preset, built once for the module."""
    return tr.prepare_data(TrainConfig.from_preset("test"))


# --- the schedule -----------------------------------------------------------------------------
def test_lr_schedule_warmup_peak_cosine_floor():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    # linear warmup: step 0 is 1/10 of the peak, step 9 the peak
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    # cosine from the peak at the end of warmup, halfway down at the midpoint, 10 % floor at the end
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert lr_at(10_000, cfg) == pytest.approx(1e-4)
    after = [lr_at(s, cfg) for s in range(10, 200)]
    assert all(a >= b for a, b in zip(after, after[1:])), "the cosine must never go back up"
    assert min(after) == pytest.approx(0.1 * cfg.lr) and min(after) >= 0.1 * cfg.lr - 1e-15
    with pytest.raises(TrainError):
        lr_at(-1, cfg)


def test_lr_schedule_without_warmup_starts_at_peak():
    cfg = TrainConfig(lr=2e-3, warmup_steps=0, max_steps=50)
    assert lr_at(0, cfg) == pytest.approx(2e-3)
    assert lr_at(50, cfg) == pytest.approx(2e-4)


def test_config_rejects_bad_values_with_a_reason():
    with pytest.raises(TrainError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(TrainError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=2.0)
    with pytest.raises(ValueError, match="n_kv_heads"):
        TrainConfig(model=dict(dim=64, n_layers=1, n_heads=4, n_kv_heads=3))
    with pytest.raises(TrainError, match="vocab_size"):
        TrainConfig(model=dict(dim=64, n_layers=1, n_heads=4, vocab_size=10))
    with pytest.raises(TrainError, match="unknown training preset"):
        TrainConfig.from_preset("huge")


def test_presets_are_llama2_shaped_with_gqa():
    shipped = TrainConfig.from_preset("lab-tiny").model_args()
    assert shipped.attention_kind == "GQA"
    assert 5_000_000 <= Transformer(shipped).num_params() <= 15_000_000
    fast = TrainConfig.from_preset("fast")
    assert fast.model_args().attention_kind == "GQA"
    long = TrainConfig.from_preset("lab-tiny-long")  # the extension of the shipped model: same shape, 4x the rows
    assert long.model_args() == shipped.replace(max_seq_len=1024) and long.seq_len == 4 * 256
    for name in tr.PRESETS:
        cfg = TrainConfig.from_preset(name)
        assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, cfg.grad_clip, cfg.min_lr_ratio) == (
            0.9,
            0.95,
            1e-5,
            0.1,
            1.0,
            0.1,
        ), f"{name} must keep the paper's recipe"


# --- the optimizer --------------------------------------------------------------------------------
def test_weight_decay_only_on_matrices():
    cfg = tiny_cfg()
    model = Transformer(cfg.model_args())
    opt = tr.make_optimizer(model, cfg)
    assert (opt.defaults["betas"], opt.defaults["eps"]) == ((0.9, 0.95), 1e-5)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    names = {id(p): n for n, p in model.named_parameters()}
    for p in model.parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), names[id(p)]
    assert any(names[i].endswith("attention_norm.weight") for i in names if i not in decayed)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))

    # Behaviour, not just bookkeeping: with zero gradients AdamW's update is pure decay,
    # so matrices shrink by (1 - lr·wd) and RMSNorm gains stay exactly 1.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for g in opt.param_groups:
        g["lr"] = 0.5
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 0.5 * 0.1) if p.dim() >= 2 else before[n]
        torch.testing.assert_close(p.detach(), expected, msg=n)


# --- data -----------------------------------------------------------------------------------------
def test_batches_walk_a_seeded_permutation():
    n_rows, B = 10, 4
    epoch0 = torch.cat([tr.batch_indices(s, B, n_rows, seed=3) for s in range(5)])  # 20 = two epochs
    assert sorted(epoch0[:10].tolist()) == list(range(10))
    assert sorted(epoch0[10:20].tolist()) == list(range(10))
    assert not torch.equal(epoch0[:10], epoch0[10:20]), "each epoch reshuffles"
    assert torch.equal(tr.batch_indices(3, B, n_rows, seed=3), tr.batch_indices(3, B, n_rows, seed=3))
    assert not torch.equal(tr.batch_indices(0, B, n_rows, seed=3), tr.batch_indices(0, B, n_rows, seed=4))


def test_prepare_data_packs_bos_docs_eos_and_splits_disjoint_stories(tiny_data):
    cfg = TrainConfig.from_preset("test")
    d = tiny_data
    assert d.train.dtype == torch.int64 and d.train.shape[1] == cfg.seq_len + 1
    assert d.valid.shape[1] == cfg.seq_len + 1
    assert d.tokenizer.vocab_size == cfg.vocab_size
    assert int(d.train.max()) < cfg.vocab_size and int(d.train.min()) >= 0
    assert (d.train == d.tokenizer.bos_id).any() and (d.train == d.tokenizer.eos_id).any()
    assert d.train[0, 0] == d.tokenizer.bos_id, "the stream starts with BOS"
    # Same config, same rows (determinism), and validation rows never appear in training.
    again = tr.prepare_data(cfg)
    assert torch.equal(again.train, d.train) and torch.equal(again.valid, d.valid)
    # Validation stories come from another seed: no validation story is a training story.
    # (Short packed rows of formulaic stories can coincide, so the check is on whole stories.)
    train_docs, valid_docs, _ = tr._documents(cfg)
    assert len(valid_docs) == cfg.n_valid_stories and not set(valid_docs) & set(train_docs)


# --- training -------------------------------------------------------------------------------------
def test_loss_decreases_on_a_tiny_run(tiny_data):
    cfg = tiny_cfg(max_steps=40, warmup_steps=4, eval_every=40, log_every=5)
    seen = []
    result = tr.train(cfg, progress=False, callback=seen.append, data=tiny_data)
    start = math.log(cfg.vocab_size)  # a fresh model is close to uniform
    assert result.step == 40 and result.tokens_seen == 40 * cfg.batch_size * cfg.seq_len
    assert result.history[0]["train_loss"] > start - 0.5
    assert result.train_loss < start - 1.5, (start, result.train_loss)
    assert result.val_loss < start - 1.0
    assert result.val_perplexity == pytest.approx(math.exp(result.val_loss))
    assert [r["step"] for r in seen] == list(range(5, 41, 5))
    assert set(seen[-1]) >= {"step", "tokens", "train_loss", "val_loss", "lr", "elapsed", "tokens_per_s"}
    assert seen[-1]["val_loss"] is not None and seen[0]["val_loss"] is None


def test_training_is_deterministic_given_the_seed(tiny_data):
    a = tr.train(tiny_cfg(max_steps=3), progress=False, data=tiny_data)
    b = tr.train(tiny_cfg(max_steps=3), progress=False, data=tiny_data)
    c = tr.train(tiny_cfg(max_steps=3, seed=7), progress=False, data=tiny_data)
    for (n, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), n
    assert not torch.equal(a.model.output.weight, c.model.output.weight)


class Crash(RuntimeError):
    pass


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, tiny_data):
    # log_every=2 and checkpoint_every=3: the checkpoint falls inside a logging window.
    straight = tr.train(
        tiny_cfg(tmp_path / "a", max_steps=6, checkpoint_every=3, log_every=2), progress=False, data=tiny_data
    )

    def crash_at_4(metrics):
        if metrics["step"] == 4:  # step 3's checkpoint is on disk, step 4's work is lost
            raise Crash

    cfg = tiny_cfg(tmp_path / "b", max_steps=6, checkpoint_every=3, log_every=2)
    with pytest.raises(Crash):
        tr.train(cfg, progress=False, callback=crash_at_4)  # builds its own data: the full path
    saved = tr.load_checkpoint(cfg.checkpoint_file)
    assert saved["step"] == 3 and saved["data"]["step"] == 3 and saved["scheduler"]["step"] == 3
    resumed = tr.train(cfg, progress=False, resume=True)

    assert resumed.step == 6 and resumed.tokens_seen == straight.tokens_seen
    for (n, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), f"{n} differs after resume"
    key = lambda h: [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in h]  # noqa: E731
    assert key(resumed.history) == key(straight.history)
    assert resumed.val_loss == straight.val_loss


def test_resume_refuses_a_different_run_or_a_missing_checkpoint(tmp_path, tiny_data):
    cfg = tiny_cfg(tmp_path, max_steps=2)
    with pytest.raises(TrainError, match="no checkpoint"):
        tr.train(cfg, progress=False, resume=True, data=tiny_data)
    tr.train(cfg, progress=False, data=tiny_data)
    with pytest.raises(TrainError, match="lr"):
        tr.train(cfg.replace(lr=1e-2, max_steps=4), progress=False, resume=True, data=tiny_data)
    longer = tr.train(cfg.replace(max_steps=4), progress=False, resume=True, data=tiny_data)
    assert longer.step == 4 and [r["step"] for r in longer.history][:2] == [1, 2]


def test_final_phase_reads_on_at_a_bigger_batch_and_the_floor_lr(tiny_data):
    cfg = tiny_cfg(max_steps=4, final_steps=3, final_batch_size=8, eval_every=0, log_every=1)
    assert cfg.total_steps == 7 and [cfg.batch_size_at(s) for s in range(7)] == [4] * 4 + [8] * 3
    n_rows = len(tiny_data.train)
    # The batches are one unbroken stream of rows: the final phase starts where the main one stopped.
    stream = torch.cat([tr.step_indices(s, cfg, n_rows) for s in range(7)])
    assert len(stream) == 4 * 4 + 3 * 8
    assert torch.equal(stream, tr._rows_from(0, len(stream), n_rows, cfg.seed))
    # Without a final phase, step_indices is batch_indices.
    plain = tiny_cfg()
    assert all(
        torch.equal(tr.step_indices(s, plain, n_rows), tr.batch_indices(s, 4, n_rows, plain.seed)) for s in range(5)
    )
    seen = []
    result = tr.train(cfg, progress=False, callback=seen.append, data=tiny_data)
    assert result.step == 7 and result.tokens_seen == (4 * 4 + 3 * 8) * cfg.seq_len
    assert [r["lr"] for r in seen[4:]] == [cfg.lr * cfg.min_lr_ratio] * 3
    assert seen[-1]["val_loss"] is not None, "the run ends with a validation"
    with pytest.raises(TrainError, match="final_batch_size"):
        tiny_cfg(final_batch_size=0)


def test_resume_inside_the_final_phase_continues_exactly(tmp_path, tiny_data):
    kw = dict(max_steps=3, final_steps=3, final_batch_size=6, checkpoint_every=2, log_every=1)
    straight = tr.train(tiny_cfg(tmp_path / "a", **kw), progress=False, data=tiny_data)

    def crash_at_5(metrics):
        if metrics["step"] == 5:  # the checkpoint of step 4 (inside the final phase) is on disk
            raise Crash

    cfg = tiny_cfg(tmp_path / "b", **kw)
    with pytest.raises(Crash):
        tr.train(cfg, progress=False, callback=crash_at_5, data=tiny_data)
    saved = tr.load_checkpoint(cfg.checkpoint_file)
    assert saved["step"] == 4 and saved["data"]["row_offset"] == (3 * 4 + 6) % len(tiny_data.train)
    with pytest.raises(TrainError, match="final_batch_size"):  # a different batch mid-phase: refused
        tr.train(cfg.replace(final_batch_size=5), progress=False, resume=True, data=tiny_data)
    resumed = tr.train(cfg, progress=False, resume=True, data=tiny_data)
    assert resumed.step == 6 and resumed.tokens_seen == straight.tokens_seen
    for (n, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), f"{n} differs after resume"


def test_a_final_phase_can_be_added_to_a_finished_main_phase(tmp_path, tiny_data):
    cfg = tiny_cfg(tmp_path, max_steps=3)
    tr.train(cfg, progress=False, data=tiny_data)
    more = tr.train(cfg.replace(final_steps=2, final_batch_size=8), progress=False, resume=True, data=tiny_data)
    assert more.step == 5 and more.tokens_seen == (3 * 4 + 2 * 8) * cfg.seq_len


def test_checkpoint_is_atomic_when_a_save_crashes(tmp_path, tiny_data, monkeypatch):
    cfg = tiny_cfg(tmp_path, max_steps=2)
    result = tr.train(cfg, progress=False, data=tiny_data)
    ckpt = cfg.checkpoint_file
    good = ckpt.read_bytes()
    opt = tr.make_optimizer(result.model, cfg)

    def dying_save(obj, f, *a, **k):
        # the process dies mid-write (save_checkpoint hands torch.save an open file, so a full disk is an OSError)
        f.write(b"half a checkpoint") if hasattr(f, "write") else Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        tr.save_checkpoint(ckpt, result.model, opt, cfg, 99, [], 0, 0.0, len(tiny_data.train), tiny_data.tokenizer)
    monkeypatch.undo()
    assert ckpt.read_bytes() == good, "the previous checkpoint must survive a failed save"
    assert tr.load_checkpoint(ckpt)["step"] == 2
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_corrupt_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="not a readable training checkpoint"):
        tr.load_checkpoint(bad)


# --- outputs, text files and the command line -------------------------------------------------------
def test_outputs_project_format_and_loss_curve(tmp_path, tiny_data):
    checkpoint = pytest.importorskip("llama2_lab.formats")
    cfg = tiny_cfg(tmp_path, max_steps=4, eval_every=2)
    result = tr.train(cfg, progress=False, data=tiny_data)
    for name in ("params.json", "model.safetensors", "tokenizer.model", "loss_curve.json", "loss_curve.png"):
        assert (tmp_path / name).is_file(), name
    curve = json.loads((tmp_path / "loss_curve.json").read_text())
    assert [r["step"] for r in curve["rows"]] == [1, 2, 3, 4]
    assert set(curve["rows"][1]) >= {"step", "tokens", "train_loss", "val_loss", "lr", "elapsed"}
    assert curve["summary"]["val_loss"] == pytest.approx(result.val_loss)
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = checkpoint.load_model(tmp_path)
    for (n, p), q in zip(result.model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(p, q, msg=n)


def test_training_on_a_text_file(tmp_path):
    text = tmp_path / "book.txt"
    para = (
        "The little robot walked to the market. It bought three red apples and a loaf of bread. "
        "Then it walked home and shared the apples with the cat."
    )
    text.write_text("\n\n".join(f"{para} Day {i} was sunny." for i in range(40)), encoding="utf-8")
    cfg = tiny_cfg(tmp_path / "run", text_file=str(text), vocab_size=300, max_steps=3, eval_every=3)
    data = tr.prepare_data(cfg)
    assert data.source.startswith("text file") and data.n_valid_docs == 2  # every 20th paragraph
    assert data.tokenizer.decode(data.train[0, 1:20].tolist()).startswith("The little robot")
    result = tr.train(cfg, progress=False, data=data)
    assert result.step == 3 and math.isfinite(result.val_loss)


def test_text_file_errors_say_what_to_do(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        tr.prepare_data(tiny_cfg(text_file=str(empty)))
    short = tmp_path / "short.txt"
    short.write_text("A short line about a cat and a dog who play in the sun. " * 12, encoding="utf-8")
    with pytest.raises(TrainError, match="seq-len"):
        tr.prepare_data(tiny_cfg(text_file=str(short), seq_len=2048, vocab_size=280))


def test_command_line_trains_and_reports_bad_input(tmp_path, capsys):
    parser = tr.add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--preset",
            "test",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "cli"),
            "--no-progress",
            "--samples",
            "0",
            "--threads",
            "1",
        ]
    )
    assert tr.run_from_args(args) == 0
    assert "val loss" in capsys.readouterr().out
    bad = parser.parse_args(["--preset", "test", "--text", str(tmp_path / "missing.txt"), "--no-progress"])
    assert tr.run_from_args(bad) == 2
    assert "no such file" in capsys.readouterr().err
    assert tr.run_from_args(parser.parse_args(["--preset", "test", "--lr", "-1", "--no-progress"])) == 2


def test_sample_text_starts_with_the_prompt(tiny_data):
    pytest.importorskip("llama2_lab.inference")
    result = tr.train(tiny_cfg(max_steps=2), progress=False, data=tiny_data)
    greedy = tr.sample_text(result.model, result.tokenizer, "Once upon a time", 10)
    assert greedy.startswith("Once upon a time")
    assert greedy == tr.sample_text(result.model, result.tokenizer, "Once upon a time", 10)
    hot = tr.sample_text(result.model, result.tokenizer, "Once upon a time", 10, temperature=0.8, seed=1)
    assert isinstance(hot, str) and hot.startswith("Once upon a time")


# ---- the copy probes: does a model copy names from its context? ------------------------------


class _Fixed(torch.nn.Module):
    """A stand-in model: logits from a rule on the whole input (it may peek at the answer)."""

    def __init__(self, rule, vocab=2048):
        super().__init__()
        self.args = type("A", (), {"max_seq_len": 256, "vocab_size": vocab})()
        self.rule = rule

    def forward(self, ids):
        return self.rule(ids)


@pytest.fixture(scope="module")
def story_tok():
    from llama2_lab.corpora import stories as data
    from llama2_lab.text.tokenizer import train_tokenizer

    return train_tokenizer(list(data.train_stories(600)), 2048, seed=0)


def test_name_copy_scores_separate_a_guesser_from_a_copier(story_tok):
    from llama2_lab.corpora import stories as data

    stories = list(data.valid_stories(12))
    n_names = len(tr.name_token_ids(story_tok))
    flat = _Fixed(lambda ids: torch.zeros(*ids.shape, 2048))  # every token equally likely
    scores = tr.name_copy_scores(flat, story_tok, stories)
    assert len(scores) > 20 and all(math.isclose(s, -math.log(n_names), abs_tol=1e-5) for s in scores)

    def peek(ids):  # position t-1 predicts the token at t: the perfect copier
        out = torch.zeros(*ids.shape, 2048)
        out[0, torch.arange(ids.shape[1] - 1), ids[0, 1:]] = 20.0
        return out

    assert all(s > -1e-6 for s in tr.name_copy_scores(_Fixed(peek), story_tok, stories))

    def off_by_one(ids):  # predicts the token at t from position t: the probe must not reward it
        out = torch.zeros(*ids.shape, 2048)
        out[0, torch.arange(ids.shape[1]), ids[0]] = 20.0
        return out

    assert max(tr.name_copy_scores(_Fixed(off_by_one), story_tok, stories)) < -5


def test_repeated_token_losses_see_a_second_copy():
    def peek(ids):
        out = torch.zeros(*ids.shape, 2048)
        for b in range(ids.shape[0]):
            out[b, torch.arange(ids.shape[1] - 1), ids[b, 1:]] = 20.0
        return out

    first, second = tr.repeated_token_losses(_Fixed(peek))
    assert first < 1e-3 and second < 1e-3
    args = dataclasses.replace(TrainConfig.from_preset("test").model_args(), max_seq_len=128)  # rows of 81
    untrained = Transformer(args).init_weights(seed=0)
    first, second = tr.repeated_token_losses(untrained)
    assert abs(first - second) < 0.5 and first > 5  # no copy circuit at init: both halves hard


# --- continued pretraining: a longer context -----------------------------------------------------
def test_continued_pretraining_starts_from_the_folder_and_may_grow_the_context(tmp_path, tiny_data):
    short = tmp_path / "short"
    first = tr.train(tiny_cfg(short, max_steps=2), progress=False, data=tiny_data)
    cfg = tiny_cfg(tmp_path / "long", max_steps=1, seq_len=64, init_from=str(short))
    # the start: the folder's weights, a RoPE table to the new length, the folder's tokenizer
    model = Transformer(cfg.model_args()).init_weights(seed=cfg.seed)
    tr.pretrain._start_from(model, cfg)
    for (n, p), q in zip(first.model.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(p, q, msg=n)
    assert model.args.max_seq_len == 64 and model.freqs_cis.shape[0] == 64
    data = tr.prepare_data(cfg)
    assert data.tokenizer.model_proto == first.tokenizer.model_proto  # not retrained
    assert data.train.shape[1] == 65
    result = tr.train(cfg, progress=False, data=data)
    assert result.model.args.max_seq_len == 64 and (tmp_path / "long" / "model.safetensors").is_file()


def test_continued_pretraining_refuses_a_different_shape(tmp_path, tiny_data):
    tr.train(tiny_cfg(tmp_path / "short", max_steps=1), progress=False, data=tiny_data)
    cfg = tiny_cfg(init_from=str(tmp_path / "short"), model=dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2))
    with pytest.raises(TrainError, match="different model: dim 32"):
        tr.pretrain._start_from(Transformer(cfg.model_args()), cfg)


def test_loss_by_position_is_the_per_position_mean_and_needs_the_positions(tiny_data):
    torch.manual_seed(0)
    model = Transformer(TrainConfig.from_preset("test").model_args()).init_weights(seed=0)
    rows = tiny_data.valid[:3]
    curve = tr.loss_by_position(model, rows, batch_size=2)
    assert curve.shape == (rows.shape[1] - 1,)
    assert curve.mean().item() == pytest.approx(tr.loss_on(model, rows, torch.device("cpu")).item(), rel=1e-5)
    longer = torch.cat([rows, rows[:, 1:]], 1)  # 2T + 1 ids: past the model's max_seq_len
    with pytest.raises(ValueError, match="with_context"):
        tr.loss_by_position(model, longer)
    assert tr.loss_by_position(tr.with_context(model, 2 * model.args.max_seq_len), longer).shape == (64,)


# --- the phase-3 supplement: digits, sums and capitals --------------------------------------------
def test_supplement_documents_have_right_sums_and_shouted_quotes_and_are_seeded():
    import re

    from llama2_lab.corpora import numbers

    docs = list(numbers.supplement(3, 40))
    assert docs == list(numbers.supplement(3, 40)) and docs != list(numbers.supplement(4, 40))
    sums = [m for d in docs[::2] for m in re.finditer(r"(\d) plus (\d) is (\d+)", d)]
    assert len(sums) >= 40 and all(int(a) + int(b) == int(c) for a, b, c in (m.groups() for m in sums))
    loud = docs[1::2]
    assert all(any(q.isupper() for q in re.findall(r'"([^"]+)"', d)) for d in loud if '"' in d)
    assert not any(ch.isdigit() for d in loud for ch in d)  # the stories themselves have none


def test_supplement_share_mixes_documents_into_the_generated_stories_only():
    cfg = TrainConfig.from_preset("test", supplement_share=0.2)
    train, valid, source = tr.data._documents(cfg)
    assert len(train) == cfg.n_train_stories + 15 and "supplement" in source  # 60 stories + 20 %
    assert not any(ch.isdigit() for d in valid for ch in d)  # validation stays plain stories
    assert sum("plus" in d for d in train) >= 5
    for bad in (-0.1, 1.0):
        with pytest.raises(TrainError, match="supplement_share"):
            TrainConfig.from_preset("test", supplement_share=bad)
    with pytest.raises(TrainError, match="text_file"):
        TrainConfig.from_preset("test", supplement_share=0.2, text_file="x.txt")
    assert TrainConfig.from_preset("lab-tiny-long").supplement_share == 0.25


def test_sum_and_shout_probes_measure_a_model(tiny_data):
    from llama2_lab.corpora import stories as data

    model = Transformer(TrainConfig.from_preset("test").model_args()).init_weights(seed=0)
    tok = tiny_data.tokenizer
    assert tr.sum_accuracy(model, tok) == 0.0  # an untrained model gets no sum right
    plain, shouted = tr.shout_loss(model, tok, list(data.valid_stories(3)))
    assert plain > 0 and shouted > 0 and math.isfinite(plain + shouted)
