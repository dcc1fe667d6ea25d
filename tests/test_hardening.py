"""Hostile-but-fair use (issue #17): broken text, degenerate numbers, mistyped configs, messy folders,
killed writes and a full disk, CLI misuse. Each class fails with a named error or has a defined
behaviour, and nothing the user had is lost."""

import errno
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from llama2_lab import formats as ck
from llama2_lab.cli import main
from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.formats import CheckpointError
from llama2_lab.inference import filtered_distributions, generate, sample_next, top_p_filter

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    import random

    from llama2_lab.text.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran to the park with a red ball while birds sang".split()
    return train_tokenizer([" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(200)], 300)


def tiny(seed=0, **kw) -> Transformer:
    args = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=16, max_seq_len=96)
    return Transformer(ModelArgs(**{**args, **kw})).init_weights(std=0.5, seed=seed).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    ck.save_model(tiny(), folder, tokenizer=tok)
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llama2-lab: error: "), err
    for needle in needles:
        assert needle in err, err


# --- 1. text that is not clean UTF-8 -----------------------------------------------------------------
BROKEN = "the cat \udcff\udcfe sat"  # bytes ff fe read with surrogateescape: lone surrogates at 8, 9


def test_encode_refuses_lone_surrogates_naming_the_position(tok):
    with pytest.raises(ValueError, match=r"position 8 \(U\+DCFF") as info:
        tok.encode(BROKEN)
    assert type(info.value).__name__ == "TextError"
    with pytest.raises(ValueError, match="position 8"):
        tok.encode_with_offsets(BROKEN)


def test_chat_encoder_names_the_message_with_broken_text(tok):
    from llama2_lab.text.chat import DialogError, encode_dialog

    dialog = [{"role": "system", "content": "be brief"}, {"role": "user", "content": BROKEN}]
    with pytest.raises(DialogError, match=r"Message 1 \(user\).*position 8"):
        encode_dialog(tok, dialog)


@pytest.mark.parametrize(
    "ids, what",
    [
        ("123", "str"),
        ([5, 3.7], "float"),
        ([5, True], "bool"),
        (np.array([5.0, 6.0]), "float64"),
        (torch.tensor([5.0]), "float32"),
        (7, "for one id"),
        ([[5, 6]], "list"),
    ],
)
def test_decode_refuses_what_is_not_integer_ids(tok, ids, what):
    with pytest.raises(TypeError, match=what):
        tok.decode(ids)


def test_decode_takes_integer_arrays_and_tensors(tok):
    ids = tok.encode("the cat sat")
    want = tok.decode(ids)
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == want
    assert tok.decode([np.int64(i) for i in ids]) == tok.decode(tuple(ids)) == want


def test_chat_survives_a_line_that_is_not_utf8_and_answers_the_next(capsys, saved, monkeypatch):
    # A strict UTF-8 stdin, as under an en_US.UTF-8 locale: the bad bytes must not end the session.
    raw = b"the \xff\xfe dog\nthe red ball\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="strict"))
    code, out, err = run(capsys, "chat", saved, "--greedy", "--max-new-tokens", 4)
    assert code == 0, err
    assert "not valid Unicode at position 4" in err
    assert len(out.split("\n")) == 2  # one reply (to the second line) and its newline


def test_generate_refuses_a_broken_prompt_in_one_line(capsys, saved):
    code, _, err = run(capsys, "generate", saved, "--prompt", BROKEN, "--max-new-tokens", 2)
    one_line_error(code, err, "--prompt holds a character that is not valid Unicode at position 8")


# --- 2. numbers that are legal but degenerate --------------------------------------------------------
LOGITS = torch.tensor([[1.0, 2.0, 30.0, -4.0], [3.0, 29.0, 1.0, 0.0]])  # argmax 2 and 1


@pytest.mark.parametrize("temperature", [1e-38, 1e-40, 1e-46, 5e-324])
@pytest.mark.parametrize("top_p", [None, 0.9])
def test_tiny_temperatures_sample_the_argmax(temperature, top_p):
    gen = torch.Generator().manual_seed(0)
    assert sample_next(LOGITS, temperature, top_p=top_p, generator=gen).tolist() == [2, 1]
    d = filtered_distributions(LOGITS, temperature, top_p=top_p)
    for probs in d.values():
        assert torch.isfinite(probs).all() and torch.allclose(probs.sum(-1), torch.ones(2))
    assert d["top_p"].argmax(-1).tolist() == [2, 1]


@pytest.mark.parametrize("top_p", [1e-46, 5e-324, 1e-300])
def test_tiny_top_p_keeps_the_most_likely_token(top_p):
    probs = torch.softmax(LOGITS / 10, -1)
    kept = top_p_filter(probs, top_p)
    assert torch.isfinite(kept).all() and kept.argmax(-1).tolist() == [2, 1] and torch.all(kept.max(-1).values == 1)
    assert sample_next(LOGITS, 0.8, top_p=top_p, generator=torch.Generator().manual_seed(0)).tolist() == [2, 1]


@pytest.mark.parametrize("bad, kind", [(float("nan"), "NaN"), (float("inf"), r"\+inf")])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_nan_or_inf_logits_are_an_error_not_unk(bad, kind, temperature):
    logits = torch.zeros(1, 5)
    logits[0, 3] = bad
    with pytest.raises(ValueError, match=f"{kind}.*corrupt checkpoint or a dtype overflow"):
        sample_next(logits, temperature)
    with pytest.raises(ValueError, match="-inf everywhere"):
        sample_next(torch.full((1, 5), float("-inf")), temperature)


def test_greedy_generation_on_a_nan_model_says_why():
    model = tiny()
    with torch.no_grad():
        model.output.weight.fill_(float("nan"))  # a corrupt checkpoint
    with pytest.raises(ValueError, match="NaN"):
        generate(model, [1, 5, 6], 4, temperature=0)


def test_seeds_and_numpy_numbers():
    model = tiny()
    a = generate(
        model, [1, 5], 5, temperature=np.float32(0.9), top_p=np.float64(0.9), top_k=np.int64(50), seed=np.int64(3)
    )
    assert a == generate(model, np.array([1, 5]), 5, temperature=0.9, top_p=0.9, top_k=50, seed=3)
    assert generate(model, [1, 5], 3, temperature=1.0, seed=2**64 - 1) is not None  # the largest 64-bit seed
    for seed in (2**64, -1, 2.5):
        with pytest.raises(ValueError, match="seed must be"):
            generate(model, [1, 5], 3, temperature=1.0, seed=seed)


@pytest.mark.parametrize("stop", [b"x", {"a": 1}, 3.0, (s for s in ["a"])])
def test_stop_must_be_ids_strings_or_a_list_of_them(tok, stop):
    with pytest.raises(ValueError, match="stop must be"):
        generate(tiny(), [1, 5], 3, temperature=0, stop=stop, tokenizer=tok)


def test_stop_accepts_numpy_ids_and_tuples(tok):
    model = tiny()
    first = generate(model, [1, 5], 4, temperature=0)[0]
    assert generate(model, [1, 5], 4, temperature=0, stop=np.int64(first)).stop_reason == "eos"
    assert generate(model, [1, 5], 4, temperature=0, stop=(int(first),)).stop_reason == "eos"


# --- 3. config and index files with wrong types ---------------------------------------------------
def _project(tmp_path, **params):
    ck.save_model(tiny(), tmp_path / "m")
    path = tmp_path / "m" / "params.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **params}))
    return tmp_path / "m"


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("norm_eps", "1e-5", r"norm_eps must be a finite number > 0.*'1e-5' \(a str\)"),
        ("rope_theta", None, r"rope_theta must be a finite number > 0.*got None"),
        ("ffn_dim_multiplier", "1.3", r"ffn_dim_multiplier must be a finite number > 0 or None"),
        ("dim", "32", r"dim must be an integer, got '32' \(a string\)"),
        ("max_seq_len", 96.0, r"max_seq_len must be an integer, got 96.0"),
    ],
)
def test_params_json_wrong_types_name_the_field_and_type(tmp_path, field, value, expected):
    with pytest.raises(CheckpointError, match=expected):
        ck.load_model(_project(tmp_path, **{field: value}))


def _hf(tmp_path, **changes):
    ck.save_hf(tiny(), tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return tmp_path / "hf"


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("rope_scaling", "linear", r"rope_scaling must be an object or null, got 'linear' \(a string\)"),
        ("rope_theta", None, r"rope_theta must be a number, got null"),
        ("rms_norm_eps", "1e-5", r"rms_norm_eps must be a number, got '1e-5' \(a string\)"),
        ("max_position_embeddings", "96", r"max_position_embeddings must be an integer or null"),
        ("hidden_size", 32.0, r"hidden_size must be an integer, got 32.0"),
        ("architectures", "LlamaForCausalLM", r"architectures must be a list or null"),
    ],
)
def test_hf_config_wrong_types_name_the_field_and_type(tmp_path, field, value, expected):
    with pytest.raises(CheckpointError, match=expected):
        ck.load_model(_hf(tmp_path, **{field: value}))


@pytest.mark.parametrize("target, expected", [(5, "must be a string, got 5"), ("../x.safetensors", "file name")])
def test_weight_map_entries_must_be_file_names(tmp_path, target, expected):
    ck.save_hf(tiny(), tmp_path / "hf", max_shard_bytes=40_000)
    index = tmp_path / "hf" / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"]["lm_head.weight"] = target
    index.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=f"weight_map.lm_head.weight.*{expected}"):
        ck.load_model(tmp_path / "hf")


@pytest.mark.parametrize("kw", [dict(), dict(max_seq_len=4096, n_heads=2), dict(dim=64, max_seq_len=777)])
def test_buffer_bytes_counts_every_buffer_the_model_allocates(kw):
    from llama2_lab.core.calc import buffer_bytes

    model = tiny(**kw)
    assert buffer_bytes(model.args) == sum(b.numel() * b.element_size() for b in model.buffers())


def test_a_huge_max_seq_len_is_refused_before_allocating(tmp_path, monkeypatch):
    from llama2_lab.formats import loading

    folder = _project(tmp_path, max_seq_len=2**21)  # RoPE table: 2M positions x head_dim 8 x 4 B = 64 MiB
    weights = sum(t.numel() for t in tiny().state_dict().values()) * 4  # float32 on disk: 172 KiB
    monkeypatch.setattr(loading, "available_memory", lambda device: weights + 2**20)  # the weights fit
    built = []
    monkeypatch.setattr(loading, "_build", lambda a: built.append(a))
    with pytest.raises(CheckpointError, match=r"RoPE table \(max_seq_len 2097152\).*smaller max_seq_len"):
        ck.load_model(folder)
    assert built == []  # refused before the model (and its table) was built


# --- 4. folders as users keep them -----------------------------------------------------------------
def test_stray_consolidated_files_are_ignored_and_noted(tmp_path):
    m = tiny()
    ck.save_meta(m, tmp_path, n_shards=2)
    (tmp_path / "consolidated.backup.pth").write_bytes(b"an old copy")
    (tmp_path / "consolidated.00.old.pth").write_bytes((tmp_path / "consolidated.00.pth").read_bytes())
    loaded = ck.load_model(tmp_path)
    for (name, a), b in zip(m.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    notes = ck.info(tmp_path)["notes"]
    assert any("consolidated.backup.pth" in n for n in notes) and any("consolidated.00.old.pth" in n for n in notes)


def _load_in_thread(path, seconds=20):
    """load_model(path) in a thread: (finished in time?, the exception it raised)."""
    box = {}

    def target():
        try:
            ck.load_model(path)
        except Exception as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), box.get("error")


@pytest.mark.parametrize(
    "fmt, name", [("meta", "consolidated.01.pth"), ("project", "model.safetensors"), ("project", "params.json")]
)
def test_a_fifo_instead_of_a_file_is_refused_without_blocking(tmp_path, fmt, name):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    m = tiny()
    ck.save_meta(m, tmp_path, n_shards=2) if fmt == "meta" else ck.save_model(m, tmp_path)
    (tmp_path / name).unlink()
    os.mkfifo(tmp_path / name)
    try:
        finished, error = _load_in_thread(tmp_path)
    finally:  # unblock a reader stuck on the FIFO (the code before #17), so the thread can end
        try:
            os.close(os.open(tmp_path / name, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert finished, "load_model blocked on a FIFO"
    assert isinstance(error, CheckpointError) and "named pipe (FIFO)" in str(error) and name in str(error)


def test_shards_of_different_dtypes_are_a_dtype_mismatch(tmp_path):
    ck.save_meta(tiny(), tmp_path, n_shards=2)
    shard = torch.load(tmp_path / "consolidated.01.pth", weights_only=True)
    torch.save({k: v.to(torch.bfloat16) for k, v in shard.items()}, tmp_path / "consolidated.01.pth")
    with pytest.raises(
        CheckpointError,
        match=r"dtype mismatch across shards \(float32 in consolidated.00.pth, "
        r"bfloat16 in consolidated.01.pth\)",
    ):
        ck.load_model(tmp_path)


# --- 5. nothing lost --------------------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _same_weights(a: Transformer, b: Transformer) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_model_failing_midway_leaves_the_old_folder_whole(tmp_path, tok, monkeypatch):
    from llama2_lab.formats import project

    old, new = tiny(seed=0), tiny(seed=1, max_seq_len=64)
    folder = tmp_path / "model"
    ck.save_model(old, folder, tokenizer=tok)
    (folder / "MODEL_CARD.md").write_text("kept")

    def dies(*a, **k):  # weights written, params.json not: the moment a kill used to leave a mix
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(project, "atomic_write_text", dies)
    with pytest.raises(OSError):
        ck.save_model(new, folder, tokenizer=tok)
    monkeypatch.undo()
    back = ck.load_model(folder)
    assert back.args == old.args and _same_weights(back, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder left beside it
    ck.save_model(new, folder, tokenizer=tok)
    back = ck.load_model(folder)
    assert back.args == new.args and _same_weights(back, new)
    assert (folder / "MODEL_CARD.md").read_text() == "kept" and (folder / "tokenizer.model").is_file()


KILL = """
import os, sys
from pathlib import Path
import torch
from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.formats import project, save_model
args = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=16, max_seq_len={seq})
model = Transformer(args).init_weights(std=0.5, seed=1)
if sys.argv[2] == "mid-write":
    project.atomic_write_text = lambda *a, **k: os._exit(9)  # killed after the weights, before params.json
else:
    real, calls = os.replace, []
    def replace(src, dst):  # killed between moving the old folder aside and moving the new one in
        calls.append(dst)
        if str(dst).endswith(".old"):
            real(src, dst)
            os._exit(9)
        real(src, dst)
    os.replace = replace
save_model(model, Path(sys.argv[1]))
"""


@pytest.mark.parametrize("when", ["mid-write", "between-renames"])
def test_a_killed_save_leaves_the_old_or_the_new_folder_and_is_cleaned_next_time(tmp_path, when):
    old, folder = tiny(seed=0), tmp_path / "model"
    ck.save_model(old, folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL.format(seq=64), str(folder), when],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr
    assert any(p.name.startswith(".model.") for p in tmp_path.iterdir())  # the dead process's leftovers
    if when == "mid-write":
        back = ck.load_model(folder)
        assert back.args == old.args and _same_weights(back, old)  # the old model, whole
    from llama2_lab.utils.io import clean_temps

    clean_temps(tmp_path, "model")  # what the next save or training run does first
    back = ck.load_model(folder)
    assert back.args.max_seq_len == (96 if when == "mid-write" else 64)  # old, or the new one rolled forward
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_so(tmp_path, monkeypatch):
    from llama2_lab import training as tr

    cfg = tr.TrainConfig.from_preset("test", out_dir=str(tmp_path), max_steps=3, checkpoint_every=1)
    real, calls = torch.save, []

    def full_disk(obj, f, *a, **k):
        calls.append(1)
        if len(calls) < 2:
            return real(obj, f, *a, **k)
        f.write(b"half a checkpoint") if hasattr(f, "write") else Path(f).write_bytes(b"half a checkpoint")
        try:  # what torch.save does on a full disk: ENOSPC in a write, then a RuntimeError closing the zip
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 461888 vs 461780")  # noqa: B904

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        tr.TrainError,
        match=r"could not write the checkpoint of step 2 \(No space left on device\); "
        r"the last good checkpoint, step 1, is kept at .*checkpoint.pt.*--resume",
    ):
        tr.train(cfg, progress=False)
    monkeypatch.undo()
    assert tr.load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert tr.train(cfg, progress=False, resume=True).step == 3  # space freed: the run goes on


def test_the_next_run_cleans_what_a_killed_write_left(tmp_path):
    from llama2_lab import training as tr

    pid = _dead_pid()
    stale = [tmp_path / f".checkpoint.pt.{pid}.abc123.tmp", tmp_path / f".loss_curve.json.{pid}.x_1.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    alive = tmp_path / f".checkpoint.pt.{os.getppid()}.zzz.tmp"  # a live process's write is not touched
    alive.write_bytes(b"busy")
    cfg = tr.TrainConfig.from_preset("test", out_dir=str(tmp_path), max_steps=1)
    tr.train(cfg, progress=False)
    assert not any(p.exists() for p in stale) and alive.exists()


def test_a_full_disk_under_safetensors_is_an_oserror_with_its_errno(tmp_path, monkeypatch):
    import safetensors.torch as st

    def full(*a, **k):
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(st, "save_file", full)
    with pytest.raises(OSError) as info:
        ck.save_model(tiny(), tmp_path / "m")
    assert info.value.errno == errno.ENOSPC and not (tmp_path / "m").exists()


# --- 6. the CLI checks before it works -------------------------------------------------------------
def test_train_out_pointing_at_a_file_is_refused_before_training(capsys, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run(capsys, "train", "--preset", "test", "--out", target, "--no-progress", "--samples", 0)
    assert code == 2 and err.strip().count("\n") == 0 and "is an existing file" in err, err
    assert target.read_text() == "mine"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["generate", "{folder}", "--threads", "0"], "--threads must be >= 1, got 0"),
        (["chat", "{folder}", "--threads", "-2"], "--threads must be >= 1, got -2"),
        (["generate", "{folder}", "--seed", "-1"], "--seed must be >= 0"),
        (["generate", "{folder}", "--seed", str(2**64)], "seed must be an integer >= 0 and <= 18446744073709551615"),
        (["bench", "--threads", "0"], "--threads must be >= 1, got 0"),
        (["bench", "--prompt-len", "-4"], "--prompt-len must be >= 1, got -4"),
        (["bench", "--batch", "1", "-8"], "--batch must be >= 1, got -8"),
        (["bench", "--repeats", "0"], "--repeats must be >= 1"),
        (["gatt", "--steps", "-1"], "--steps must be >= 1"),
        (["gatt", "--threads", "0"], "--threads must be >= 1"),
        (["train", "--steps", "-5"], "--steps must be >= 1"),
        (["train", "--threads", "0"], "--threads must be >= 1"),
        (["generate", "--temperature", "hot"], "invalid float value"),
        (["generate", "--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_sizes_are_refused_up_front_in_one_line(capsys, saved, monkeypatch, argv, needle):
    from llama2_lab.experiments.gatt import command as gatt_command
    from llama2_lab.inference import bench

    def must_not_run(*a, **k):
        raise AssertionError("the command started working before checking its options")

    monkeypatch.setattr(bench, "run", must_not_run)
    monkeypatch.setattr(gatt_command, "run_pipeline", must_not_run)
    code, _, err = run(capsys, *(a.format(folder=saved) for a in argv))
    one_line_error(code, err, needle)


@pytest.mark.parametrize(
    "system, needle",
    [
        ("be nice [INST] and obey", "--system: Message 0 (system) contains the special tag '[INST]'"),
        ("cats " * 200, "--system takes"),
        ("bad \udcff byte", "--system: Message 0 (system) holds a character that is not valid Unicode"),
    ],
)
def test_chat_system_is_checked_once_up_front(capsys, saved, monkeypatch, system, needle):
    monkeypatch.setattr(sys, "stdin", io.StringIO("the dog\nthe cat\nthe ball\n"))
    code, out, err = run(capsys, "chat", saved, "--system", system, "--greedy", "--max-new-tokens", 4)
    assert out == ""
    one_line_error(code, err, needle)


def test_chat_with_a_closed_stdin(capsys, saved, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # what Python sets when fd 0 is closed (`llama2-lab chat <&-`)
    code, _, err = run(capsys, "chat", saved, "--greedy")
    one_line_error(code, err, "stdin is closed")


def test_chat_with_a_closed_stdin_in_a_real_process(saved):
    proc = subprocess.run(
        f"{sys.executable} -m llama2_lab.cli chat {saved} --greedy <&-",
        shell=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "stdin is closed" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("bug", [RuntimeError("internal"), KeyError("x"), AttributeError("y")])
def test_an_internal_bug_still_shows_its_traceback(capsys, saved, monkeypatch, bug):
    import llama2_lab.inference as inference

    def broken(*a, **k):
        raise bug

    monkeypatch.setattr(inference, "stream", broken)
    with pytest.raises(type(bug)):
        main(["generate", str(saved), "--prompt", "the", "--max-new-tokens", "2"])


# --- 7. widgets refuse nonsense when they are made --------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"head_dim": 7}, "even"),
        ({"head_dim": 0}, "head_dim"),
        ({"head_dim": "64"}, "head_dim"),
        ({"theta": 0}, "theta"),
        ({"theta": float("nan")}, "theta"),
        ({"positions": 0}, "positions"),
    ],
)
def test_rope_explorer_refuses_impossible_settings_when_made(kwargs, word):
    from llama2_lab.course.explorer import ExplorerError
    from llama2_lab.course.widgets import RopeExplorer

    with pytest.raises(ExplorerError, match=word):
        RopeExplorer(**kwargs)


def test_rope_explorer_with_few_positions_opens_inside_its_range():
    from llama2_lab.course.widgets import RopeExplorer

    ex = RopeExplorer(positions=2)
    assert ex.controls["m"].value == 1 and ex.controls["n"].value == 1


def test_config_explorer_names_an_unknown_preset():
    from llama2_lab.course.explorer import ExplorerError
    from llama2_lab.course.widgets import ConfigExplorer

    with pytest.raises(ExplorerError, match=r"unknown preset 'llama2-8b'.*llama2-7b"):
        ConfigExplorer("llama2-8b")


@pytest.mark.parametrize(
    "patterns, word",
    [
        ({0: np.zeros((2, 0, 0))}, "empty"),
        ({0: np.full((2, 3, 3), np.nan)}, "NaN"),
        ({0: -np.ones((2, 3, 3))}, "negative"),
        ({}, "no attention patterns"),
    ],
)
def test_attention_explorer_refuses_patterns_it_cannot_show(patterns, word):
    from llama2_lab.course.explorer import AttentionExplorer, ExplorerError

    S = next(iter(patterns.values())).shape[-1] if patterns else 3
    with pytest.raises(ExplorerError, match=word):
        AttentionExplorer(patterns, [f"t{i}" for i in range(S)])


@pytest.mark.parametrize(
    "kwargs, word",
    [({"n_kv_heads": 3}, "divide"), ({"max_cells": 0}, "max_cells"), ({"n_kv_heads": "2"}, "n_kv_heads")],
)
def test_attention_explorer_refuses_bad_settings_when_made(kwargs, word):
    from llama2_lab.course.explorer import AttentionExplorer, ExplorerError

    p = np.tril(np.ones((4, 5, 5))) / np.arange(1, 6)[:, None]
    with pytest.raises(ExplorerError, match=word):
        AttentionExplorer({0: p}, list("abcde"), **kwargs)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"top_n": 0}, "top_n"),
        ({"prompt": "bad \udcff"}, "UTF-8|surrogate|position"),
    ],
)
def test_sampling_playground_refuses_bad_settings_when_made(kwargs, word):
    from llama2_lab import default_model_path, load_model, load_tokenizer
    from llama2_lab.course.explorer import ExplorerError, SamplingPlayground

    model, tok = load_model(default_model_path()), load_tokenizer(default_model_path())
    with pytest.raises(ExplorerError, match=word):
        SamplingPlayground(model, tok, **kwargs)
