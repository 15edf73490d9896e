"""Judge-client throughput against a loopback server that answers every request after a fixed delay.

A vLLM-class judge server batches whatever is in flight, so its throughput grows with the number
of concurrent requests until the GPU saturates; the client must keep enough of them in flight.
This measures what the ``local`` judge client itself can sustain (requests/s vs concurrency) with
a server that never saturates: the ideal is ``concurrency / delay``. ``--capacity N`` makes the
server answer 429 beyond N requests at once, to show the adaptive limit backing off and recovering.

The server runs in its own process (``judges.testing.FakeChatServer``), so the client's threads do
not share an interpreter lock with it. CPU only:

    python benchmarks/judge_client.py --delay 0.05 --concurrency 1,8,16,32,64,128 --requests 1000
    python benchmarks/judge_client.py --delay 0.05 --concurrency 64 --capacity 16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from record import write_record

from llamavid_eval.judges.backends.openai_compat import LocalJudge
from llamavid_eval.judges.base import JudgeRequest
from llamavid_eval.judges.testing import Call, FakeChatServer, Response, error, reply


class DelayedVerdict:
    """The server's script: a valid JSON verdict after ``delay`` s; 429 beyond ``capacity`` (0: none)."""

    def __init__(self, delay: float, capacity: int) -> None:
        self.delay = delay
        self.capacity = capacity
        self.server: FakeChatServer | None = None

    def __call__(self, call: Call) -> Response:
        if self.capacity and self.server is not None and self.server.active > self.capacity:
            return error(429, "server at capacity")
        return reply('{"pred": "yes", "score": 5}', delay=self.delay)


def serve(delay: float, capacity: int, urls: mp.Queue, stop: mp.Event, counts: mp.Queue) -> None:
    script = DelayedVerdict(delay, capacity)
    with FakeChatServer(script) as server:
        script.server = server
        urls.put(server.url)
        stop.wait()
        counts.put((len(server.calls), server.max_active))


def measure(url: str, concurrency: int, requests: int, max_retries: int) -> tuple[float, int, float]:
    """Seconds for ``requests`` distinct judgements, failures, and the adaptive limit at the end."""
    judge = LocalJudge(
        "bench",
        api_key="EMPTY",
        base_url=url,
        concurrency=concurrency,
        response_format="json_object",
        max_retries=max_retries,
        backoff_base=0.05,
        backoff_max=1.0,
        parse_retries=0,
    )
    items = [JudgeRequest(f"question {concurrency}-{i}", "answer", f"prediction {i}") for i in range(requests)]
    start = time.perf_counter()
    out = judge.judge_many(items)
    seconds = time.perf_counter() - start
    judge.close()
    return seconds, sum(j.failed for j in out), judge.limit.limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.05, help="server answer delay in seconds")
    parser.add_argument("--concurrency", default="1,8,16,32,64,128", help="comma-separated client concurrencies")
    parser.add_argument("--requests", type=int, default=1000, help="judgements per concurrency (at least 4 rounds)")
    parser.add_argument("--capacity", type=int, default=0, help="server answers 429 beyond this many in flight")
    parser.add_argument("--max-retries", type=int, default=8)
    args = parser.parse_args()

    print(
        f"server delay {args.delay * 1000:.0f} ms, capacity {args.capacity or 'unlimited'}; "
        f"ideal requests/s = min(concurrency, capacity) / delay"
    )
    print(
        "| concurrency | requests | seconds | requests/s | ideal | of ideal | failed | server max in flight "
        "| server requests | final limit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        requests = max(args.requests, concurrency * 4)
        urls, counts, stop = mp.Queue(), mp.Queue(), mp.Event()
        proc = mp.Process(target=serve, args=(args.delay, args.capacity, urls, stop, counts), daemon=True)
        proc.start()
        try:
            seconds, failed, limit = measure(urls.get(timeout=30), concurrency, requests, args.max_retries)
        finally:
            stop.set()
        served, max_active = counts.get(timeout=30)
        proc.join(timeout=30)
        rate = requests / seconds
        ideal = min(concurrency, args.capacity or concurrency) / args.delay
        print(
            f"| {concurrency} | {requests} | {seconds:.2f} | {rate:,.0f} | {ideal:,.0f} | {rate / ideal:.0%} "
            f"| {failed} | {max_active} | {served} | {limit:.1f} |",
            flush=True,
        )
        rows.append(
            {
                "concurrency": concurrency,
                "requests": requests,
                "seconds": seconds,
                "requests_per_s": rate,
                "ideal": ideal,
                "failed": failed,
                "server_max_in_flight": max_active,
                "server_requests": served,
                "final_limit": limit,
            }
        )
    write_record("judge_client", {"arguments": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
