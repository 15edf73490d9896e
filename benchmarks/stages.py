"""Where one LLM batch's time goes: every stage of the runner timed alone (GPU synchronised).

Same workload as ``throughput.py`` (random 7B weights, bf16, 10-frame videos, 26 questions each);
one batch of ``--batch-size`` questions, each stage repeated ``--repeats`` times, median shown.

    python benchmarks/stages.py --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from record import write_record
from throughput import add_batch_arguments, one_batch_workload

from llamavid_eval.model.inference import LlamaVidRunner, generation_kwargs, prepare_batch
from llamavid_eval.model.processing import (
    qformer_text,
    qformer_tokenizer_inputs,
    question_with_placeholder,
    tokenize_with_image,
    vicuna_v1_prompt,
)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_stages(
    runner: LlamaVidRunner, questions: list, indices: list[int], args: argparse.Namespace
) -> list[tuple[str, float]]:
    """Median milliseconds of each stage of one batch (the graph path only times generation)."""
    loaded, model = runner.loaded, runner.loaded.model
    batch_questions = [questions[i] for i in indices]
    settings = generation_kwargs(dict(batch_questions[0].generation))
    batch = prepare_batch(questions, indices, runner.loaded.image_processor)
    pixels = batch.pixel_values.to("cuda")
    texts = [qformer_text(q.question) for q in batch_questions]
    with torch.inference_mode():
        features = model.encode_frames(pixels, chunk_size=runner.vision_batch_size)
        qformer_ids, qformer_mask = qformer_tokenizer_inputs(loaded.qformer_tokenizer, texts, "cuda")
        visual = runner.visual_tokens(batch_questions, batch)
        inputs = runner.llm_inputs(batch_questions, visual)
        runner.generate(inputs, settings)  # warm-up (records the CUDA graphs)
        stages: list[tuple[str, Callable[[], object]]] = [
            (
                "CPU: decode + preprocess videos",
                lambda: prepare_batch(questions, indices, runner.loaded.image_processor),
            ),
            ("host -> GPU pixels", lambda: batch.pixel_values.to("cuda")),
            ("vision tower", lambda: model.encode_frames(pixels, chunk_size=runner.vision_batch_size)),
            ("CPU: Q-Former tokenizer", lambda: qformer_tokenizer_inputs(loaded.qformer_tokenizer, texts, "cuda")),
            ("Q-Former + projector", lambda: model.visual_tokens(features, batch.segments, qformer_ids, qformer_mask)),
            (
                "CPU: LLM tokenizer",
                lambda: [
                    tokenize_with_image(
                        vicuna_v1_prompt([(question_with_placeholder(q.question), None)]), loaded.tokenizer
                    )
                    for q in batch_questions
                ],
            ),
            ("llm_inputs (tokenize + splice + prefix)", lambda: runner.llm_inputs(batch_questions, visual)),
            (
                "generate: 1 token (prefill)",
                lambda: runner.generate(inputs, {**settings, "max_new_tokens": 1, "min_new_tokens": 1}),
            ),
            (f"generate: {args.answer_tokens} tokens", lambda: runner.generate(inputs, settings)),
            ("whole batch (generate_batch)", lambda: runner.generate_batch(batch_questions, batch)),
        ]
        if runner.graph_decoder is not None:  # the other stages run the same code as eager
            stages = stages[-3:]
        return [(name, median_ms(fn, args.repeats)) for name, fn in stages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.cuda.set_device(0)
    loaded, videos, questions, indices = one_batch_workload(args, "llamavid-stages-")
    rows: list[tuple[str, str, float]] = []

    for decode in ("eager", "graph"):
        runner = LlamaVidRunner(loaded, batch_size=args.batch_size, compile=decode == "graph")
        rows += [(decode, name, ms) for name, ms in time_stages(runner, questions, indices, args)]

    print(
        f"\n{args.batch_size} questions, {len(videos)} videos x {args.frames} frames, {torch.cuda.get_device_name()}\n"
    )
    print("| decode | stage | ms per batch |\n|---|---|---|")
    for decode, name, ms in rows:
        print(f"| {decode} | {name} | {ms:.1f} |")
    stages = [{"decode": decode, "stage": name, "ms_per_batch": ms} for decode, name, ms in rows]
    write_record("stages", {"arguments": vars(args), "videos": len(videos), "rows": stages})


if __name__ == "__main__":
    main()
