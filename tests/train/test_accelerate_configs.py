"""The shipped accelerate configs parse as `accelerate launch` parses them and build valid plugins.

Only the single-process path can run on this CPU machine; these tests check that each
YAML is what `accelerate launch --config_file ...` accepts, down to the FSDP / DeepSpeed
plugin objects built from it, not that a multi-GPU run succeeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def launch_args(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(path), "-m", "dartkit.train"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    return parser, args, defaults, mp_from_config


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_config_parses_and_names_the_launch_command(name):
    from accelerate.commands.config.config_args import ClusterConfig

    path = CONFIGS / f"{name}.yaml"
    text = path.read_text()
    assert f"accelerate launch --config_file configs/accelerate/{name}.yaml -m dartkit.train" in text
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys
    assert config.mixed_precision == "bf16" and config.num_processes > 1
    parser, args, defaults, _ = launch_args(path)
    # Every nested key must be a `accelerate launch` option, or accelerate would silently ignore it.
    options = {a.dest for a in parser._actions}
    for key in defaults.fsdp_config:
        assert (key if key.startswith("fsdp") else f"fsdp_{key}") in options, key
    for key in defaults.deepspeed_config:
        assert key in options, key


def test_ddp_config_launches_multi_gpu():
    _, args, _, _ = launch_args(CONFIGS / "ddp.yaml")
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed


def test_fsdp_config_builds_a_full_shard_llama_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    _, args, _, _ = launch_args(CONFIGS / "fsdp.yaml")
    env = prepare_multi_gpu_env(args)
    assert env["FSDP_SYNC_MODULE_STATES"] == "true"
    # sync_module_states asks the current CUDA device for an init function; there is none here.
    env["FSDP_SYNC_MODULE_STATES"] = "false"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.sharding_strategy.name == "FULL_SHARD"
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert plugin.use_orig_params is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"


@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_config_builds_a_bf16_zero_plugin(monkeypatch, name, stage):
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    _, args, defaults, mp_from_config = launch_args(CONFIGS / f"{name}.yaml")
    # What `accelerate launch` does before handing over to the DeepSpeed launcher.
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    ds = DeepSpeedPlugin().deepspeed_config
    assert ds["zero_optimization"]["stage"] == stage
    # Filled from dartkit's TrainConfig at prepare() time.
    assert ds["gradient_accumulation_steps"] == "auto" and ds["train_micro_batch_size_per_gpu"] == "auto"
    if stage == 3:
        # Needed to gather the adapter from the shards for the final save.
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
