"""The benchmark's phases (see bench/__main__.py for the command line and BENCHMARKS.md for results)."""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from bench import scenarios as sc
from bench.measure import CpuMeter, Latency, rss_mib
from bench.seed import SeededOrder, seed_agent, seed_orders
from bench.shape import WorkflowShape, baseline_spec, read_shape
from bench.stack import BASELINE_QUEUE, TASK_QUEUE, Stack


def say(text: str) -> None:
    print(f"bench: {text}", flush=True)


@dataclass
class Config:
    quick: bool = False
    cases_a: int = 300
    cases_b: int = 120
    concurrency: int = 40
    latency_requests: dict[int, int] = field(default_factory=lambda: {1: 100, 10: 400, 50: 1000})
    waiting: int = 10_000
    scaling: tuple[int, ...] = (1, 2, 4)
    scaling_cases: int = 300
    tuning: bool = True
    settle_after: float = 0.2
    get_requests: int = 300

    @classmethod
    def for_quick(cls, waiting: int | None) -> "Config":
        return cls(quick=True, cases_a=40, cases_b=16, concurrency=20,
                   latency_requests={1: 20, 10: 60, 50: 150}, waiting=waiting if waiting is not None else 300,
                   scaling=(1, 2, 4), scaling_cases=40, tuning=False, get_requests=60)


# Worker variants tried on case (a). Knobs are temporalio Worker arguments (+ "runner", see bench/procs.py);
# "pool" is DATABASE_POOL_SIZE of the worker.
TUNING = [
    ("worker.py as shipped (sandbox, 100 wf tasks / 100 activities, cache 1000, pool 10)", {}, None),
    ("DATABASE_POOL_SIZE=20", {}, 20),
    ("max_concurrent_activities=200, pool 20", {"max_concurrent_activities": 200}, 20),
    ("10 workflow-task pollers, 10 activity pollers",
     {"max_concurrent_workflow_task_polls": 10, "max_concurrent_activity_task_polls": 10}, None),
    ("no sandbox (UnsandboxedWorkflowRunner: the upper bound of sandbox savings)", {"runner": "unsandboxed"}, None),
]


@dataclass
class Results:
    machine: dict = field(default_factory=dict)
    config: Config | None = None
    shapes: dict[str, WorkflowShape] = field(default_factory=dict)  # "a", "b", "a-baseline", "b-baseline"
    baseline_specs: dict[str, dict] = field(default_factory=dict)  # "a", "b" → bench.baseline.BaselineCase input
    throughput: dict[str, sc.LoadResult] = field(default_factory=dict)  # "a", "b", "c-a", "c-b"
    scaling: dict[int, sc.LoadResult] = field(default_factory=dict)
    tuning: list[tuple[str, sc.LoadResult]] = field(default_factory=list)
    latency: dict[int, tuple[Latency, float]] = field(default_factory=dict)  # clients → (latency, req/s)
    waiting: dict = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, stack: Stack, cfg: Config, results: Results):
        self.stack, self.cfg, self.r = stack, cfg, results
        self._batch = 0

    def prefix(self, tag: str) -> str:
        self._batch += 1
        return f"{tag}{self._batch}"

    # ------------------------------------------------------------------ load runs
    async def load(self, kind: str, n: int, concurrency: int, warmup: int = 4) -> sc.LoadResult:
        """n cases of `kind` ("a", "b", "c-a", "c-b") at `concurrency`, after `warmup` uncounted ones."""
        st = self.stack
        counters = sc.Counters()
        async with sc.api_client(st.api_url, connections=concurrency * 2 + 10) as http:
            if kind in ("a", "b"):
                status = "paid" if kind == "a" else "delivered"
                orders = await seed_orders(st.pool, self.prefix(kind), n + warmup, status)
                fn = sc.cancellation_case if kind == "a" else sc.withdrawal_case

                async def one(o: SeededOrder):
                    await fn(http, st.client, counters, o)
                items = orders
            else:
                spec = self.r.baseline_specs[kind[-1]]
                base = self.prefix("base")

                async def one(i: int):
                    await sc.baseline_case(st.client, counters, f"{base}-{i}", spec, BASELINE_QUEUE)
                items = list(range(n + warmup))
            await sc.closed_loop(items[:warmup], min(warmup, concurrency), one)
            counters.conflicts = 0
            meter = CpuMeter(st.cpu_roots).start()
            seconds, durations = await sc.closed_loop(items[warmup:], concurrency, one)
            cpu, _ = meter.stop()
        st.check_alive()
        return sc.LoadResult(cases=n, seconds=seconds, concurrency=concurrency, durations=durations,
                             conflicts=counters.conflicts, cpu=cpu)

    async def learn_shapes(self) -> None:
        """One real case of each kind, driven through the API; their histories give the baseline's shape."""
        st = self.stack
        counters = sc.Counters()
        async with sc.api_client(st.api_url) as http:
            for kind, status, fn in (("a", "paid", sc.cancellation_case), ("b", "delivered", sc.withdrawal_case)):
                orders = await seed_orders(st.pool, self.prefix(f"shape{kind}"), 3, status)
                case_id = None
                for o in orders:  # the first ones warm the worker up; the last one is read
                    case_id = await fn(http, st.client, counters, o)
                shape = await read_shape(st.client, case_id)
                self.r.shapes[kind] = shape
                self.r.baseline_specs[kind] = baseline_spec(shape, self.cfg.settle_after)
                say(f"shape of ({kind}) from {case_id}:\n{shape.describe('    ')}")

    async def check_baseline_shapes(self) -> None:
        st = self.stack
        counters = sc.Counters()
        for kind in ("a", "b"):
            case_id = f"{self.prefix('baseshape')}-{kind}"
            await sc.baseline_case(st.client, counters, case_id, self.r.baseline_specs[kind], BASELINE_QUEUE)
            self.r.shapes[f"{kind}-baseline"] = shape = await read_shape(st.client, case_id)
            say(f"shape of baseline ({kind}):\n{shape.describe('    ')}")

    # ------------------------------------------------------------------ phases
    async def phase_throughput(self) -> None:
        cfg, st = self.cfg, self.stack
        await st.start_workers(1)
        await self.learn_shapes()
        for kind, n in (("a", cfg.cases_a), ("b", cfg.cases_b)):
            res = await self.load(kind, n, cfg.concurrency)
            self.r.throughput[kind] = res
            say(f"({kind}) {res.cases} cases in {res.seconds:.1f} s: {res.per_second:.1f}/s "
                f"({res.conflicts} retried 409)")
        await st.start_workers(1, baseline=True)
        await self.check_baseline_shapes()
        for kind, n in (("c-a", cfg.cases_a), ("c-b", cfg.cases_b)):
            res = await self.load(kind, n, cfg.concurrency)
            self.r.throughput[kind] = res
            say(f"({kind}) {res.cases} cases in {res.seconds:.1f} s: {res.per_second:.1f}/s")
        await st.stop_workers()

    async def phase_scaling(self) -> None:
        cfg, st = self.cfg, self.stack
        for workers in cfg.scaling:
            await st.start_workers(workers)
            res = await self.load("a", cfg.scaling_cases, cfg.concurrency)
            self.r.scaling[workers] = res
            say(f"(a) with {workers} worker process(es): {res.per_second:.1f}/s")
        await st.stop_workers()

    async def phase_tuning(self) -> None:
        cfg, st = self.cfg, self.stack
        for label, knobs, pool in TUNING:
            await st.start_workers(1, knobs=knobs or None, pool_size=pool)
            res = await self.load("a", cfg.scaling_cases, cfg.concurrency)
            self.r.tuning.append((label, res))
            say(f"tuning: {label}: {res.per_second:.1f}/s")
        await st.stop_workers()

    async def phase_latency(self) -> None:
        """POST help-requests (cancellation of a validated order: the case then waits for the seller), each
        on a fresh order, by 1, 10, 50 concurrent clients looping; then waits for the worker to catch up."""
        cfg, st = self.cfg, self.stack
        await st.start_workers(1)
        async with sc.api_client(st.api_url, connections=200) as http:
            # warm the API and the worker up
            for o in await seed_orders(st.pool, self.prefix("lwarm"), 5, "validated"):
                await sc.open_case(http, o, "cancellation")
            for clients, n in sorted(cfg.latency_requests.items()):
                prefix = self.prefix("lat")
                orders = await seed_orders(st.pool, prefix, n, "validated")
                lat = Latency()

                async def one(o: SeededOrder):
                    t0 = time.perf_counter()
                    await sc.open_case(http, o, "cancellation")
                    lat.samples.append(time.perf_counter() - t0)
                seconds, _ = await sc.closed_loop(orders, clients, one)
                self.r.latency[clients] = (lat, n / seconds)
                p50, p95, p99 = lat.pcts()
                say(f"help-request latency at {clients} client(s): p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                    f"p99 {p99:.0f} ms ({n / seconds:.0f} req/s)")
                await self._quiet(f"b{prefix}_")
        st.check_alive()

    async def _quiet(self, prefix_done: str, timeout: float = 300) -> float:
        """Until every case on orders `prefix_done`* waits for its seller (the worker has caught up)."""
        t0 = time.monotonic()
        like = prefix_done.replace("_", "\\_") + "%"
        total = await self.stack.pool.fetchval("SELECT count(*) FROM orders WHERE order_id LIKE $1", like)
        while time.monotonic() - t0 < timeout:
            waiting = await self.stack.pool.fetchval(
                "SELECT count(*) FROM cases WHERE order_id LIKE $1 AND stage = 'awaiting_seller_decision'", like)
            if waiting >= total:
                return time.monotonic() - t0
            self.stack.check_alive()
            await asyncio.sleep(0.5)
        raise TimeoutError(f"cases on {prefix_done}* did not all reach awaiting_seller_decision")

    async def phase_waiting(self) -> None:
        """N cancellations of validated orders, each waiting for its seller under a one-business-day timer
        (and a reminder timer), opened through the service layer the API uses (same checks, same insert,
        same workflow start; no HTTP). Then the worker's RSS and the API's read latencies."""
        from domain.models import Actor, CaseKind, Role
        from domain.policy import load_policy
        from starter.service import CaseService

        cfg, st = self.cfg, self.stack
        n = cfg.waiting
        w = self.r.waiting
        await st.start_workers(1)
        worker = st.workers[0]
        w["rss_idle"] = rss_mib(worker.pid)
        prefix = self.prefix("wait")
        t0 = time.monotonic()
        orders = await seed_orders(st.pool, prefix, n, "validated", per_customer=5, sellers=50)
        w["seed_seconds"] = time.monotonic() - t0
        svc = CaseService(st.pool, st.client, TASK_QUEUE, load_policy())
        peak = {"worker": 0.0, "temporal": 0.0}
        sampling = True

        async def sample():
            while sampling:
                peak["worker"] = max(peak["worker"], rss_mib(worker.pid))
                peak["temporal"] = max(peak["temporal"], rss_mib(st.temporal.pid))
                await asyncio.sleep(0.5)
        sampler = asyncio.create_task(sample())
        meter = CpuMeter(st.cpu_roots).start()
        t0 = time.monotonic()
        sem = asyncio.Semaphore(50)
        opened = 0

        async def open_one(o: SeededOrder):
            nonlocal opened
            async with sem:
                actor = Actor(role=Role.customer, id=o.customer_id)
                _, created = await svc.open_case(actor, o.order_id, CaseKind.cancellation)
                if not created:
                    raise sc.BenchError(f"no case opened on {o.order_id}")
                opened += 1
                if opened % 2000 == 0:
                    say(f"  {opened}/{n} cases opened ({time.monotonic() - t0:.0f} s)")
        await asyncio.gather(*(open_one(o) for o in orders))
        w["start_seconds"] = time.monotonic() - t0
        say(f"{n} cases started in {w['start_seconds']:.1f} s; waiting for the worker to bring them all to "
            "awaiting_seller_decision")
        w["all_waiting_seconds"] = w["start_seconds"] + await self._quiet(f"b{prefix}_", timeout=max(600, n / 5))
        cpu, wall = meter.stop()
        w["cpu"] = cpu
        w["cpu_wall"] = wall
        say(f"all {n} waiting after {w['all_waiting_seconds']:.1f} s")
        await asyncio.sleep(3)
        sampling = False
        await sampler
        w["rss_peak"] = peak["worker"]
        w["rss_after"] = rss_mib(worker.pid)
        w["temporal_rss"] = rss_mib(st.temporal.pid)
        w["temporal_rss_peak"] = peak["temporal"]
        w["open_cases"] = await st.pool.fetchval("SELECT count(*) FROM cases WHERE closed_at IS NULL")
        w["cases_rows"] = await st.pool.fetchval("SELECT count(*) FROM cases")
        w["n"] = n

        # Reads with them open, as a care agent.
        agent = await seed_agent(st.pool)
        ids = [r["case_id"] for r in await st.pool.fetch(
            "SELECT case_id FROM cases WHERE order_id LIKE $1", f"b{prefix}\\_%")]
        rng = random.Random(7)
        async with sc.api_client(st.api_url, connections=50) as http:
            for name, path_fn in (("get", lambda: f"/v1/cases/{rng.choice(ids)}"), ("list", lambda: "/v1/cases")):
                lat = Latency()

                async def one(_):
                    t = time.perf_counter()
                    r = await http.get(path_fn(), headers=sc.bearer(agent))
                    if r.status_code != 200:
                        raise sc.BenchError(f"GET {r.url}: {r.status_code} {r.text[:200]}")
                    lat.samples.append(time.perf_counter() - t)
                await sc.closed_loop(list(range(10)), 5, one)  # warm-up
                lat.samples.clear()
                seconds, _ = await sc.closed_loop(list(range(cfg.get_requests)), 10, one)
                w[f"{name}_latency"] = lat
                w[f"{name}_rps"] = cfg.get_requests / seconds
                p50, p95, p99 = lat.pcts()
                say(f"GET {name} with {w['open_cases']} open cases: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                    f"p99 {p99:.0f} ms")
        w["rss_end"] = rss_mib(worker.pid)
        say(f"worker RSS: idle {w['rss_idle']:.0f} MiB, peak {w['rss_peak']:.0f} MiB, "
            f"after {w['rss_after']:.0f} MiB; Temporal server {w['temporal_rss']:.0f} MiB")
        await st.stop_workers()


async def run(cfg: Config, phases: list[str], keep_logs: bool = False) -> Results:
    from bench.measure import machine

    results = Results(machine=machine(), config=cfg)
    t_start = time.monotonic()
    stack = Stack(settle_after=cfg.settle_after, keep_logs=keep_logs)
    try:
        t0 = time.monotonic()
        await stack.start()
        results.phase_seconds["stack start"] = time.monotonic() - t0
        say(f"stack up in {results.phase_seconds['stack start']:.1f} s (Temporal {stack.temporal_address}, "
            f"API {stack.api_url}, PostgreSQL {stack.database_url})")
        bench = Bench(stack, cfg, results)
        for phase in phases:
            t0 = time.monotonic()
            say(f"--- {phase}")
            await getattr(bench, f"phase_{phase}")()
            results.phase_seconds[phase] = time.monotonic() - t0
    except BaseException:
        say(f"failed; logs of the stack in {stack.tmp / 'logs'}")
        stack.keep_logs = True
        raise
    finally:
        await stack.stop()
        results.total_seconds = time.monotonic() - t_start
    return results
