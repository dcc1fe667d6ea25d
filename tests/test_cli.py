"""The llama2-lab command line, driven through main([...]) on a tiny saved model."""

import io
import random
import subprocess
import sys
from pathlib import Path

import pytest

from llama2_lab.cli import COMMANDS, main
from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    from llama2_lab.text.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran to the park with a red ball while birds sang".split()
    texts = [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(200)]
    return train_tokenizer(texts + ["I love llamas 🦙 and cats."] * 3, 300)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tok):
    """A tiny random model saved in the project format with its tokenizer: (folder, model)."""
    from llama2_lab.formats import save_model

    args = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=len(tok), multiple_of=16, max_seq_len=96)
    model = Transformer(args).init_weights(std=0.5, seed=0)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(model, folder, tokenizer=tok)
    return folder, model


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- generate ------------------------------------------------------------------------------------
def test_generate_greedy_streams_the_same_text_as_the_library(capsys, saved, tok):
    from llama2_lab.inference import generate_text

    folder, model = saved
    code, out, err = run(capsys, "generate", folder, "--prompt", "the cat", "--greedy", "--max-new-tokens", 12)
    assert code == 0
    assert out == "the cat" + generate_text(model, tok, "the cat", 12, temperature=0) + "\n"
    assert "tokens/s" in err and "prompt 3 tokens" in err
    n = int(err.split(" tokens in ")[0].rsplit(" ", 1)[-1])
    assert 0 < n <= 12


def test_generate_seed_reproduces_and_context_is_reported(capsys, saved):
    folder, _ = saved
    a = run(capsys, "generate", folder, "--seed", 3, "--temperature", 1.0, "--max-new-tokens", 10)
    b = run(capsys, "generate", folder, "--seed", 3, "--temperature", 1.0, "--max-new-tokens", 10)
    assert a[0] == b[0] == 0 and a[1] == b[1]
    code, _, err = run(
        capsys,
        "generate",
        folder,
        "--greedy",
        "--max-new-tokens",
        500,
        "--device",
        "cpu",
        "--dtype",
        "bf16",
        "--top-k",
        5,
    )
    assert code == 0 and ("max_seq_len" in err or "end of sequence" in err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "{missing}"], "does not exist"),
        (["generate", "{garbage}"], "model.bin"),  # the error names the file it cannot read
        (["generate", "{folder}", "--temperature", "-1"], "temperature must be"),
        (["generate", "{folder}", "--top-p", "0"], "top_p must be in (0, 1]"),
        (["generate", "{folder}", "--top-k", "0"], "top_k must be"),
        (["generate", "{folder}", "--max-new-tokens", "-3"], "--max-new-tokens must be >= 0"),
        (["generate", "{folder}", "--device", "tpu"], "unknown device"),
        (["generate", "{folder}", "--dtype", "int8"], "unknown dtype"),
        (["generate", "{folder}", "--tokenizer", "{missing}"], "tokenizer"),
        (["generate", "{folder}", "--tokenizer", "{garbage}"], "SentencePiece"),
        (["info", "{missing}"], "missing"),
    ],
)
def test_user_mistakes_are_one_line_errors(capsys, saved, tmp_path, argv, message):
    garbage = tmp_path / "model.bin"
    garbage.write_bytes(b"\x00not a model at all" * 3)
    names = dict(missing=tmp_path / "missing", garbage=garbage, folder=saved[0])
    code, out, err = run(capsys, *(a.format(**names) for a in argv))
    assert code == 2
    assert err.startswith("llama2-lab: error: ") and message in err and "Traceback" not in err


def test_usage_errors_and_help(capsys):
    assert main([]) == 2
    assert "generate" in capsys.readouterr().err
    assert main(["generate", "--temperature", "hot"]) == 2
    assert "invalid float value" in capsys.readouterr().err
    assert main(["generate", "--help"]) == 0
    assert "(default 0.6, Meta's llama default)" in " ".join(capsys.readouterr().out.split())


def test_ctrl_c_exits_130_quietly(capsys, saved, monkeypatch):
    import llama2_lab.inference as gen

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "stream", interrupted)
    code, _, err = run(capsys, "generate", saved[0], "--prompt", "the")
    assert code == 130 and "Traceback" not in err and "error" not in err


# --- chat ---------------------------------------------------------------------------------------
def test_chat_through_a_pipe_answers_each_line(capsys, saved, tok, monkeypatch):
    from llama2_lab.inference import chat

    folder, model = saved
    monkeypatch.setattr(sys, "stdin", io.StringIO("the dog\n\nthe red ball\n"))
    code, out, err = run(capsys, "chat", folder, "--system", "the cat", "--greedy", "--max-new-tokens", 6)
    assert code == 0
    replies = out.split("\n")[:-1]
    assert len(replies) == 2 and "> " not in out  # one line per message, blank lines skipped, no prompt
    dialog = [{"role": "system", "content": "the cat"}, {"role": "user", "content": "the dog"}]
    first = chat(model, tok, dialog, 6, temperature=0)
    assert replies[0] == first  # the library gives the same reply (no newline in these random replies)
    assert "dropped" not in err


def test_checkpoint_can_be_given_as_an_option(capsys, saved, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("the dog\n"))
    code, out, _ = run(capsys, "chat", "--checkpoint", saved[0], "--greedy", "--max-new-tokens", 6)
    monkeypatch.setattr(sys, "stdin", io.StringIO("the dog\n"))
    code2, out2, _ = run(capsys, "chat", saved[0], "--greedy", "--max-new-tokens", 6)
    assert code == code2 == 0 and out == out2
    code, _, err = run(capsys, "chat", saved[0], "--checkpoint", tmp_path / "other", "--greedy")
    assert code != 0 and "two checkpoints given" in err and "Traceback" not in err


def test_chat_drops_oldest_turns_when_the_context_fills(capsys, saved, monkeypatch):
    folder, _ = saved  # max_seq_len 96: the prompt gets 96 - 24 = 72 tokens
    lines = "".join(f"the dog ran to the park with a red ball {i}\n" for i in range(6))
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code, out, err = run(capsys, "chat", folder, "--greedy", "--max-new-tokens", 24, "--system", "the cat")
    assert code == 0 and len(out.split("\n")) == 7
    assert "dropped the" in err and "oldest turn" in err


def test_chat_reports_a_bad_message_and_goes_on(capsys, saved, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("[INST] sneaky\nthe dog\n"))
    code, out, err = run(capsys, "chat", saved[0], "--greedy", "--max-new-tokens", 4)
    assert code == 0 and "special tag" in err and len(out.split("\n")) == 2


# --- info, family ---------------------------------------------------------------------------------
def test_info_and_family(capsys, saved):
    from llama2_lab import formats as checkpoint
    from llama2_lab.core import calc

    code, out, _ = run(capsys, "info", saved[0])
    assert code == 0 and out == checkpoint.format_info(checkpoint.info(saved[0])) + "\n"
    assert "project" in out
    code, out, _ = run(capsys, "family")
    assert code == 0 and out == calc.format_family_table() + "\n" and "llama2-70b" in out


def test_commands_registry_lists_each_subcommand_once():
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    for add in COMMANDS:
        add(sub)
    assert list(sub.choices) == ["generate", "chat", "info", "family", "train", "gatt", "rlhf", "bench", "course"]


def test_console_script_help_runs():
    exe = ROOT / ".venv" / "bin" / "llama2-lab"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (pip install -e . creates it)")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "generate" in proc.stdout and "chat" in proc.stdout


def test_subcommand_helper_wires_a_module_in_one_line(capsys, monkeypatch):
    import llama2_lab.cli as cli

    def add_arguments(p):
        p.add_argument("--n", type=int, default=1)

    def run_echo(args):
        if args.n < 0:
            raise ValueError(f"--n must be >= 0, got {args.n}")
        print("echo" * args.n)
        return 0

    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [cli.subcommand("echo", "print echo", add_arguments, run_echo)])
    assert run(capsys, "echo", "--n", 2)[:2] == (0, "echoecho\n")
    code, _, err = run(capsys, "echo", "--n", -1)
    assert code == 2 and err == "llama2-lab: error: --n must be >= 0, got -1\n"
