"""The extra-buffer decision from /proc/cpuinfo text, and its effect on a loaded model."""

import pytest
from aiosh.kernel.config import ConfigError, load_config
from aiosh.kernel.cpu import cpu_flags, decide_extra_buffers

AMX_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse sse2 avx2 avx512f amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities

processor\t: 1
flags\t\t: fpu vme sse sse2 avx2 avx512f amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities
"""
PLAIN_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 avx2 fma
"""
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


def test_flags_are_read_from_every_processor():
    assert {"amx_int8", "avx2"} <= cpu_flags(AMX_CPUINFO)
    assert "asimd" in cpu_flags(ARM_CPUINFO)
    assert cpu_flags("") == set()


def test_auto_turns_extra_buffers_off_only_on_amx():
    amx = decide_extra_buffers("auto", AMX_CPUINFO)
    assert not amx.enabled and "amx_int8" in amx.reason
    assert decide_extra_buffers("auto", PLAIN_CPUINFO).enabled
    assert decide_extra_buffers("auto", ARM_CPUINFO).enabled
    assert decide_extra_buffers("auto", "").enabled  # nothing known: nothing to avoid


def test_an_explicit_setting_wins_over_the_cpu():
    assert decide_extra_buffers(True, AMX_CPUINFO).enabled
    assert not decide_extra_buffers(False, PLAIN_CPUINFO).enabled


def test_config_accepts_auto_true_false_and_names_the_key_otherwise(tmp_path):
    for value in ('"auto"', "true", "false"):
        f = tmp_path / "a.toml"
        f.write_text(f"[model]\nextra_buffers = {value}\n")
        load_config(f, cwd=tmp_path)
    f.write_text('[model]\nextra_buffers = "sometimes"\n')
    with pytest.raises(ConfigError) as err:
        load_config(f, cwd=tmp_path)
    assert "[model] extra_buffers" in str(err.value)


@pytest.mark.model
def test_the_loaded_model_records_the_decision(model):
    assert model.extra_buffers.enabled == decide_extra_buffers("auto").enabled
