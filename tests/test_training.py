"""`training`: config validation, data/labels, what trains, loss falls, save -> load parity, resume, CLI.

Everything runs on CPU with the tiny release and a synthetic colour-QA set (the answer is the colour
of a 3-frame MP4), in one process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from media import write_video

from llamavid_eval.model.loading import load_llamavid
from llamavid_eval.model.lora import apply_lora
from llamavid_eval.training import TrainConfig, build_random_model, load_config, run_training
from llamavid_eval.training.__main__ import main
from llamavid_eval.training.checkpointing import resume_dir
from llamavid_eval.training.config import ConfigError
from llamavid_eval.training.data import Collator, DataError, load_datasets
from llamavid_eval.training.metrics import read_log
from llamavid_eval.training.params import TrainingModule, configure_trainable

RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes"
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
QUESTION = "Which colour appears first?"


def record(index: int, colour: str, turns: list[tuple[str, str]] | None = None) -> dict:
    turns = turns or [(f"<image>\n{QUESTION}", colour)]
    messages = [m for q, a in turns for m in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
    return {"id": f"clip{index}", "video": f"videos/clip{index}.mp4", "conversations": messages}


@pytest.fixture(scope="module")
def colour_qa(tmp_path_factory) -> Path:
    """Data root with 9 three-frame videos (one colour each), train.json (6) and eval.json (3)."""
    root = tmp_path_factory.mktemp("colour-qa")
    records = []
    for index, colour in enumerate(list(COLOURS) * 3):
        frames = np.broadcast_to(np.array(COLOURS[colour], np.uint8), (3, 32, 32, 3)).copy()
        write_video(root / "videos" / f"clip{index}.mp4", frames, fps=1)
        records.append(record(index, colour))
    (root / "train.json").write_text(json.dumps(records[:6]))
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[6:]))
    return root


def tiny_config(tiny_release, data_root: Path, output: Path, **overrides) -> TrainConfig:
    values = dict(
        base=str(tiny_release.checkpoint),
        qformer_tokenizer=str(tiny_release.bert_tokenizer),
        train_data="train.json",
        data_root=str(data_root),
        output_dir=str(output),
        mixed_precision="no",
        num_workers=0,
        per_device_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=2e-3,
        max_length=128,
        save_every=0,
        report_to="none",
        save_dtype="float32",
        lora_rank=4,
        lora_alpha=8,
        resume="never",
    )
    values.update(overrides)
    return TrainConfig(**values).validate()


def batch_for(tiny_release, config: TrainConfig) -> dict:
    """A fixed evaluation batch (the collator's output without the counters)."""
    loaded = load_llamavid(config.base, qformer_tokenizer=config.qformer_tokenizer)
    train, _, _ = load_datasets(config, loaded.tokenizer, loaded.image_processor, loaded.model.config.tokens_per_frame)
    batch = Collator(loaded.qformer_tokenizer)([train[i] for i in range(3)])
    batch.pop("num_tokens"), batch.pop("num_label_tokens")
    return batch


@torch.no_grad()
def logits(module: torch.nn.Module, batch: dict) -> torch.Tensor:
    return module.eval()(**batch).logits


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train_data: x.json\nlearning_rat: 1e-4\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'"):
        load_config(recipe)
    with pytest.raises(ConfigError, match="fps='fast'"):
        load_config(None, ["train_data=x.json", "fps=fast"])
    with pytest.raises(ConfigError, match="method='qlora'"):
        load_config(None, ["train_data=x.json", "method=qlora"])
    config = load_config(
        None, ["train_data=x.json", "learning_rate=1e-4", "max_frames=null", "train_visual=[projector]"]
    )
    assert (config.learning_rate, config.max_frames, config.train_visual) == (1e-4, None, ["projector"])
    with pytest.raises(ConfigError, match=r"recipe .*nope.yaml not found; the shipped recipes are in .*recipes"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("train_data: [x.json\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_one_dtype_table_for_config_merge_and_backend():
    from llamavid_eval.model.lmms_backend import resolve_dtype
    from llamavid_eval.model.loading import torch_dtype

    config = load_config(None, ["train_data=x.json", "load_dtype=bf16", "save_dtype=half"])
    assert (config.load_dtype, config.save_dtype) == ("bfloat16", "float16")
    with pytest.raises(ConfigError, match="save_dtype='fp8'"):
        load_config(None, ["train_data=x.json", "save_dtype=fp8"])
    assert torch_dtype("fp32") is torch_dtype(torch.float32) is torch.float32
    assert resolve_dtype("half", torch.device("cpu")) is torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    with pytest.raises(ValueError, match="dtype='int8'.*bf16"):
        resolve_dtype("int8", torch.device("cpu"))


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_are_valid(recipe):
    config = load_config(recipe)
    assert config.method == ("lora" if recipe.stem.endswith("_lora") else "full")
    assert f"fps{config.fps:g}" in recipe.stem and config.learning_rate > 0


def test_labels_keep_only_assistant_turns(tiny_release, colour_qa, tmp_path):
    multi = record(0, "red", [(f"{QUESTION}\n<image>", "red"), ("Which colour appears last?", "red too")])
    (tmp_path / "multi.json").write_text(json.dumps([multi]))
    config = tiny_config(tiny_release, colour_qa, tmp_path, train_data=str(tmp_path / "multi.json"), max_length=1024)
    loaded = load_llamavid(config.base, qformer_tokenizer=config.qformer_tokenizer)
    train, _, _ = load_datasets(config, loaded.tokenizer, loaded.image_processor, 2)
    item = train[0]
    ids, labels = item["input_ids"], item["labels"]
    place = (ids == -200).nonzero().flatten().tolist()  # one <image>, moved to the front of the first question
    assert len(place) == 1 and loaded.tokenizer.decode(ids[1 : place[0]].tolist()).endswith("USER:")
    assert loaded.tokenizer.decode(ids[place[0] + 1 :].tolist()).strip().startswith(QUESTION)
    spans, current = [], []  # contiguous runs of unmasked labels
    for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
        if label == -100 and current:
            spans.append(current)
            current = []
        elif label != -100:
            assert label == token
            current.append(token)
    spans.append(current) if current else None
    decoded = [loaded.tokenizer.decode(span).strip() for span in spans]
    assert decoded == ["red</s>", "red too</s>"]
    assert item["question"] == QUESTION  # the Q-Former sees the first question alone
    assert item["pixel_values"].shape[0] == 3 and item["length"] == len(ids) - 1 + 3 * 2


def test_too_long_examples_are_skipped_and_counted_or_raise(tiny_release, colour_qa, tmp_path):
    loaded = load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer)

    def datasets(**overrides):
        config = tiny_config(tiny_release, colour_qa, tmp_path, **overrides)
        return load_datasets(config, loaded.tokenizer, loaded.image_processor, 2)

    lengths = [example.length for example in datasets()[0].examples]
    longest = max(lengths)
    assert len(datasets(max_length=longest)[0]) == 6
    kept, _, skipped = datasets(max_length=longest - 1)
    assert len(kept) + len(skipped) == 6 and len(skipped) == lengths.count(longest)
    assert f"{longest} tokens" in skipped[0]["reason"] and "3 frames x 2" in skipped[0]["reason"]
    assert len(datasets(max_length=longest - 1, max_frames=2)[0]) == 6  # 2 frames x 2 tokens fit again
    with pytest.raises(DataError, match="too_long=skip"):
        datasets(max_length=longest - 1, too_long="error")
    with pytest.raises(DataError, match=r"no usable training records .*: 6 skipped as too long .*; first: .*clip0"):
        datasets(max_length=min(lengths) - 1)
    (tmp_path / "absent.json").write_text(json.dumps([record(99, "red")]))  # clip99.mp4 was never written
    with pytest.raises(DataError, match=r"record 'clip99': Video .*clip99\.mp4 not found .*under the data root"):
        datasets(train_data=str(tmp_path / "absent.json"))


def test_loss_falls_on_colour_qa(tiny_release, colour_qa, tmp_path):
    config = tiny_config(
        tiny_release,
        colour_qa,
        tmp_path,
        num_epochs=8,
        gradient_accumulation_steps=2,
        learning_rate=5e-3,
        warmup_ratio=0.1,
        eval_data="eval.jsonl",
        eval_every=6,
    )
    run = run_training(config)
    rows = read_log(config.output_dir)
    losses = [row["loss"] for row in rows if "loss" in row]
    evals = [row["eval_loss"] for row in rows if "eval_loss" in row]
    assert len(losses) == 16 and run.progress.step == 16
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    assert len(evals) == 3 and evals[-1] < evals[0] - 1.0, evals  # first evaluation after 6 steps
    assert all(row["tokens_per_s"] > 0 and row["lr"] >= 0 for row in rows if "loss" in row)


def test_lora_trains_adapters_and_visual_tokenizer_only(tiny_release):
    loaded = load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer)
    visual = sum(p.numel() for p in loaded.model.visual_tokenizer.parameters())
    config = TrainConfig(train_data="x", method="lora", lora_rank=4)
    model = configure_trainable(loaded.model, config)
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_A." in n or ".lora_B." in n or ".visual_tokenizer.modules_to_save." in n for n in trainable)
    llm = model.base_model.model.config
    per_layer = 4 * 4 * (llm.hidden_size * 2) + 3 * 4 * (llm.hidden_size + llm.intermediate_size)
    assert sum(trainable.values()) == llm.num_hidden_layers * per_layer + visual
    stage1 = configure_trainable(
        load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer).model,
        TrainConfig(train_data="x", method="stage1", train_visual=["attention", "projector"]),
    )
    names = [n for n, p in stage1.named_parameters() if p.requires_grad]
    assert names and all(
        n.startswith("visual_tokenizer.") and "qformer" not in n and "query_tokens" not in n for n in names
    )


def test_full_finetune_saves_released_layout_with_same_logits(tiny_release, colour_qa, tmp_path):
    config = tiny_config(tiny_release, colour_qa, tmp_path / "run", max_steps=2)
    run = run_training(config)
    assert run.output == tmp_path / "run" / "model" and (run.output / "pytorch_model.bin.index.json").is_file()
    batch = batch_for(tiny_release, config)
    reloaded = load_llamavid(run.output, qformer_tokenizer=tiny_release.bert_tokenizer)
    assert json.loads((run.output / "config.json").read_text()).get("use_cache") is not False
    torch.testing.assert_close(logits(TrainingModule(reloaded.model), batch), logits(run.module, batch))
    base = load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer)
    assert not torch.allclose(logits(TrainingModule(base.model), batch), logits(run.module, batch))


def test_lora_adapter_and_merge_give_same_logits(tiny_release, colour_qa, tmp_path):
    config = tiny_config(tiny_release, colour_qa, tmp_path / "run", method="lora", max_steps=3, learning_rate=1e-2)
    run = run_training(config)
    assert (run.output / "adapter_config.json").is_file()
    batch = batch_for(tiny_release, config)
    expected = logits(run.module, batch)
    base = load_llamavid(tiny_release.checkpoint, qformer_tokenizer=tiny_release.bert_tokenizer)
    untouched = logits(TrainingModule(base.model), batch)
    assert not torch.allclose(untouched, expected, atol=1e-4)
    merged = apply_lora(base.model, run.output)
    torch.testing.assert_close(logits(TrainingModule(merged), batch), expected, atol=2e-5, rtol=1e-4)
    assert (
        main(
            [
                "merge",
                "--base",
                str(tiny_release.checkpoint),
                "--lora",
                str(run.output),
                "--out",
                str(tmp_path / "merged"),
                "--qformer-tokenizer",
                str(tiny_release.bert_tokenizer),
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    full = load_llamavid(tmp_path / "merged", qformer_tokenizer=tiny_release.bert_tokenizer)
    torch.testing.assert_close(logits(TrainingModule(full.model), batch), expected, atol=2e-5, rtol=1e-4)


def test_resume_continues_at_the_same_step_with_the_same_losses(tiny_release, colour_qa, tmp_path):
    common = dict(
        num_epochs=3,
        gradient_accumulation_steps=2,
        save_every=3,
        keep_checkpoints=5,
        eval_data="eval.jsonl",
        eval_every=3,
    )
    whole = tiny_config(tiny_release, colour_qa, tmp_path / "whole", **common)
    uninterrupted = run_training(whole)
    checkpoint = tmp_path / "whole" / "checkpoints" / "step_0000003"
    assert resume_dir(whole.__class__(**{**whole.to_dict(), "resume": "auto"}), tmp_path / "whole") == checkpoint
    assert json.loads((checkpoint / "progress.json").read_text()) == {"step": 3, "epoch": 1, "batches": 2}
    resumed = run_training(tiny_config(tiny_release, colour_qa, tmp_path / "resumed", resume=str(checkpoint), **common))
    assert uninterrupted.progress.step == resumed.progress.step == 6
    first = [r for r in read_log(tmp_path / "whole") if r["step"] > 3]
    second = read_log(tmp_path / "resumed")
    assert [r["step"] for r in second] == [r["step"] for r in first] == [4, 5, 6, 6]
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in {"loss", "lr", "eval_loss"} & a.keys():
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (key, a, b)
    for (name, p), (_, q) in zip(
        uninterrupted.module.named_parameters(), resumed.module.named_parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=name)


def test_cli_runs_a_recipe_end_to_end(tiny_release, colour_qa, tmp_path, capsys):
    overrides = {
        "base": tiny_release.checkpoint,
        "qformer_tokenizer": tiny_release.bert_tokenizer,
        "train_data": "train.json",
        "data_root": colour_qa,
        "output_dir": tmp_path / "out",
        "max_steps": 2,
        "per_device_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "mixed_precision": "no",
        "num_workers": 1,
        "report_to": "none",
        "save_every": 1,
    }
    argv = ["train", "--config", str(RECIPES / "ucf_crime_fps1.yaml")]
    for key, value in overrides.items():
        argv += ["--override", f"{key}={value}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "learning_rate: 2.0e-05" in out and "warmup_ratio: 0.03" in out  # config printed, recipe defaults
    assert out.strip().splitlines()[-1] == str(tmp_path / "out" / "model")
    assert [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()] == ["step_0000001"]  # final step: no state
    load_llamavid(tmp_path / "out" / "model", qformer_tokenizer=tiny_release.bert_tokenizer)
    with pytest.raises(SystemExit):
        main(["train", "--config", str(RECIPES / "ucf_crime_fps1.yaml"), "--override", "frames_per_second=2"])
    assert "unknown key 'frames_per_second'" in capsys.readouterr().err


def test_build_random_model_at_7b_size_on_meta():
    lora = build_random_model("7b", TrainConfig(train_data="x", method="lora"), device="meta")
    full = build_random_model("7b", TrainConfig(train_data="x", method="full"), device="meta")
    count = {
        name: sum(p.numel() for p in m.parameters() if p.requires_grad) for name, m in (("lora", lora), ("full", full))
    }
    assert 6.5e9 < count["full"] < 7.2e9 and 0.3e9 < count["lora"] < 0.7e9
    assert all(not p.requires_grad for p in full.model.vision_tower.parameters())


def test_train_and_merge_commands_fail_with_the_reason_last(tmp_path, capsys):
    missing = tmp_path / "no-such-checkpoint"
    args = [
        "train",
        "--override",
        "train_data=x.json",
        "--override",
        f"base={missing}",
        "--override",
        f"output_dir={tmp_path / 'out'}",
        "--override",
        "report_to=none",
        "--override",
        "mixed_precision=no",
    ]  # fmt: skip (accelerate's state is per process: as the other tests)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: llamavid train: LLaMA-VID checkpoint not found")
    assert main(["merge", "--base", str(missing), "--lora", str(tmp_path), "--out", str(tmp_path / "m")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: llamavid merge: LLaMA-VID checkpoint not found") and str(missing) in last
    assert "pretrained= is --base" in last  # the option to fix, not only lmms-eval's model argument
    with pytest.raises(SystemExit) as usage:
        main(["train", "--override", "train_data=x.json", "--override", "fps=fast"])
    assert usage.value.code == 2 and "fps='fast'" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learning_rate=0", "learning_rate=0.0: expected a finite number above 0"),
        ("learning_rate=.nan", "learning_rate=nan: expected a finite number above 0"),
        ("weight_decay=-0.1", "weight_decay=-0.1: expected a finite number of at least 0"),
        ("adam_betas=[0.9, 1.5]", r"adam_betas=\[0.9, 1.5\]: expected two numbers in \[0, 1\)"),
        ("lora_dropout=1.5", r"lora_dropout=1.5: expected a probability in \[0, 1\)"),
        ("max_frames=0", "max_frames=0: expected a whole number of at least 1"),
        ("num_workers=-1", "num_workers=-1: expected a finite number of at least 0"),
        ("lora_target_modules=[]", "lora_target_modules is empty"),
        ("keep_checkpoints=0", "keep_checkpoints=0: expected a whole number of at least 1"),
    ],
)
def test_values_out_of_range_are_refused_before_the_model_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["train_data=train.json", override])


def test_an_output_folder_is_the_runs_own_and_a_resumed_checkpoint_its_config(tiny_release, colour_qa, tmp_path):
    """Checked before anything is written or loaded: no finished or foreign run in the folder, not the base,
    and a resumed checkpoint made with the same config (what it computes; not where it writes)."""
    from llamavid_eval.training.checkpointing import check_output_dir

    out = tmp_path / "run"
    config = tiny_config(tiny_release, colour_qa, out, resume="auto", save_every=2)
    check_output_dir(config, out)  # empty: fine
    step = out / "checkpoints" / "step_0000002"
    step.mkdir(parents=True)
    (step / "progress.json").write_text('{"step": 2, "epoch": 0, "batches": 2}')
    (step / "train_config.yaml").write_text(config.to_yaml())
    check_output_dir(tiny_config(tiny_release, colour_qa, out, resume="auto", save_every=4, log_every=5), out)
    changed = tiny_config(tiny_release, colour_qa, out, resume="auto", save_every=2, learning_rate=0.5)
    with pytest.raises(ConfigError, match=r"the config changed since that checkpoint \(learning_rate: 0.002 -> 0.5\)"):
        check_output_dir(changed, out)
    with pytest.raises(ConfigError, match="holds another run's checkpoints and resume=never"):
        check_output_dir(tiny_config(tiny_release, colour_qa, out, resume="never"), out)
    (out / "model").mkdir()
    with pytest.raises(ConfigError, match=r"holds a finished run \(model/\)"):
        check_output_dir(config, out)
    own_base = tiny_config(tiny_release, colour_qa, tiny_release.checkpoint.parent, resume="never")
    with pytest.raises(ConfigError, match="lies in output_dir"):
        check_output_dir(own_base, tiny_release.checkpoint.parent)


def test_malformed_training_data_is_named_by_file_and_line(tmp_path):
    from llamavid_eval.training.data import read_records

    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(json.dumps(record(0, "red")) + "\n" + '{"id": "clip1", "video": \n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid JSON"):
        read_records(jsonl)
    listing = tmp_path / "train.json"
    listing.write_text("[1, 2]")
    with pytest.raises(DataError, match="a JSON list .* of record objects"):
        read_records(listing)
    listing.write_bytes(b'[{"id": "caf\xe9"}]')
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_records(listing)


def test_ctrl_c_ends_a_command_in_one_line_with_the_shells_status(capsys):
    from llamavid_eval.core.exits import run_command

    def interrupted() -> None:
        raise KeyboardInterrupt

    assert run_command(interrupted, (ValueError,), "llamavid train") == 130
    assert capsys.readouterr().err == "error: llamavid train: interrupted (Ctrl-C)\n"


def test_merge_refuses_to_write_over_its_base(tiny_release, capsys):
    base = str(tiny_release.checkpoint)
    assert main(["merge", "--base", base, "--lora", base, "--out", base]) == 1
    assert "is the base checkpoint: merging there would overwrite it" in capsys.readouterr().err


def test_a_resumed_run_logs_each_step_once(tmp_path):
    """The interrupted run logged steps past its last checkpoint; the resumed run logs them again."""
    from accelerate import Accelerator

    from llamavid_eval.training.metrics import RunLogger

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": step, "loss": 1.0}) + "\n" for step in range(1, 9)))
    config = TrainConfig(train_data="train.json", report_to="none")
    logger = RunLogger(Accelerator(cpu=True), tmp_path, config, resumed_at=4)
    logger.log(5, {"loss": 0.5})
    assert [row["step"] for row in read_log(tmp_path)] == [1, 2, 3, 4, 5]
    RunLogger(Accelerator(cpu=True), tmp_path, config, resumed_at=None)  # a fresh run starts a fresh log
    assert not log.exists()
