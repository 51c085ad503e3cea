"""Arguments the memory core used to take wrongly: an int past float range for a float key (an OverflowError
traceback, from the command line too), MemoryAttention's inputs of another batch or length (one lane's keys
broadcast over all, or torch's errors naming nothing), a numpy int of sources, cross_attention fusion's heads,
slot ids past a lifetime tracker's slots. Each is one ValueError (ConfigError) line naming it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from memory.attention import MemoryAttention
from memory.config import MemoryConfig
from memory.fusion import Fusion
from memory.metrics import SlotLifetimeTracker
from memory.slots import WriteInfo

HUGE = 10**400  # an int past float range (a float key given a 400-digit integer)


@pytest.mark.parametrize("key", ["util_weight", "copy", "context_scale", "store_replace",
                                 "store_importance_halflife"])
def test_memory_config_float_key_given_huge_int_is_one_value_error(key):
    # was OverflowError "int too large to convert to float" from float(v), naming no key
    with pytest.raises(ValueError, match=f"memory.{key}"):
        MemoryConfig(**{key: HUGE})


@pytest.mark.parametrize("override", ["memory.util_weight", "train.lr"])
def test_cli_float_key_given_huge_int_is_config_error(override):
    from agents.config import ConfigError, load_config

    # was an OverflowError traceback out of OmegaConf.merge (full_key empty), exit code 1 with ~50 lines
    with pytest.raises(ConfigError, match=override.replace(".", r"\.")):
        load_config(["env=LongDependency-v0", f"{override}=1{'0' * 400}"])


def test_run_cli_float_key_given_huge_int_one_line(tmp_path, capsys):
    from agents import run

    assert run.main(["env=LongDependency-v0", f"memory.util_weight=1{'0' * 400}", f"runs_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: memory.util_weight: an integer beyond float range") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_memory_config_takes_the_ints_a_float_holds_as_the_command_line_does():
    """MemoryConfig refused ints above 2**1023 where the command line (float()) took every int up to float's
    maximum (~1.8e308): the two now draw the same line."""
    from agents.config import load_config

    largest = int(sys.float_info.max)  # a float's largest value, as an int
    assert MemoryConfig(store_importance_halflife=largest).store_importance_halflife == sys.float_info.max
    assert load_config([f"memory.store_importance_halflife={largest}"]).memory.store_importance_halflife \
        == sys.float_info.max
    with pytest.raises(ValueError, match=r"^memory\.store_importance_halflife: an integer beyond float range") as err:
        MemoryConfig(store_importance_halflife=2 * largest)
    assert err.value.__context__ is None  # one error, no OverflowError traceback chained above it


@pytest.mark.parametrize("fusion", ["gated", "concat", "cross_attention"])
def test_fusion_takes_numpy_int_sources(fusion):
    # np.int64(2) was refused as "must be an int >= 1" (the rest of the core takes numpy ints: initial_state,
    # memory_layers, TieredKVCache's sizes)
    f = Fusion(MemoryConfig(dim=8, attn_heads=2, fusion=fusion), np.int64(2))
    assert f(torch.randn(1, 3, 8), torch.randn(1, 3, 2, 8)).shape == (1, 3, 8)


def test_memory_attention_wrong_mem_age_shape_is_one_value_error():
    att = MemoryAttention(MemoryConfig(dim=8, attn_heads=2))
    x, mk, mv = torch.randn(2, 3, 8), torch.randn(2, 3, 4, 2, 4), torch.randn(2, 3, 4, 2, 4)
    # was a RuntimeError from a broadcast deep inside ("The size of tensor a (4) must match ..."), naming no argument
    with pytest.raises(ValueError, match="mem_age"):
        att(x, mk, mv, mem_age=torch.zeros(2, 3))


def test_memory_attention_wrong_context_age_shape_is_one_value_error():
    att = MemoryAttention(MemoryConfig(dim=8, attn_heads=2))
    with pytest.raises(ValueError, match="context_age"):
        att(torch.randn(2, 3, 8), context=torch.randn(2, 5, 8), context_age=torch.zeros(3, 3))


def test_lifetime_tracker_refuses_slot_ids_past_its_slots_in_one_line():
    tracker = SlotLifetimeTracker(1, 3)  # built for 3 slots, fed a bank of more
    # was IndexError "index 5 is out of bounds for axis 1 with size 3" (lanes were checked, slots not)
    with pytest.raises(ValueError, match="slot"):
        tracker.observe(WriteInfo(gate=torch.ones(1, 1), slot_ids=torch.tensor([[5]])))
    assert tracker.step == 0  # nothing counted


@pytest.mark.parametrize("case", ["context_batch", "key_input_length", "query_input_length", "key_input_batch1",
                                  "query_input_batch1", "context_2d"])
def test_memory_attention_checks_leading_dims_of_context_key_and_query_inputs(case):
    att = MemoryAttention(MemoryConfig(dim=8, attn_heads=2), key_in=16)
    x = torch.randn(2, 3, 8)
    kw = {"context_batch": {"context": torch.randn(1, 5, 8), "key_input": torch.randn(2, 8, 16)},
          "key_input_length": {"key_input": torch.randn(2, 5, 16)},
          "query_input_length": {"key_input": torch.randn(2, 3, 16), "query_input": torch.randn(2, 4, 8)},
          # these two were silently broadcast: lane 1 attended with lane 0's keys / queries
          "key_input_batch1": {"key_input": torch.randn(1, 3, 16)},
          "query_input_batch1": {"key_input": torch.randn(2, 3, 16), "query_input": torch.randn(1, 3, 8)},
          "context_2d": {"context": torch.randn(5, 8), "key_input": torch.randn(2, 8, 16)}}[case]
    name = next(n for n in ("context", "query_input", "key_input") if n in case)
    # were RuntimeErrors from torch.cat / a broadcast naming no argument, or no error at all
    with pytest.raises(ValueError, match=name):
        att(x, **kw)


def test_cross_attention_fusion_heads_not_dividing_dim_is_one_value_error():
    # MemoryConfig takes attn_heads=4 with dim=6 where nothing else attends (slots=0, store=false, internal=none);
    # Fusion then failed with torch's AssertionError "embed_dim must be divisible by num_heads" (MemoryAttention has
    # its own check for this case)
    cfg = MemoryConfig(dim=6, slots=0, store=False, fusion="cross_attention")
    with pytest.raises(ValueError, match="attn_heads"):
        Fusion(cfg, 1)


@pytest.mark.parametrize("before", ["model.dim", "seed", "train.episodes"])
def test_an_int_too_big_for_a_float_key_names_that_key_not_an_earlier_int_key(before):
    """The message named the first int over 2**1023 anywhere: an int key (model.dim, seed) holds any int, and was
    named instead of train.lr, whose float() overflowed."""
    from agents.config import ConfigError, load_config

    huge = "1" + "0" * 400
    with pytest.raises(ConfigError, match=r"^train\.lr: an integer beyond float range"):
        load_config([f"{before}={huge}", f"train.lr={huge}"])
