"""The benchmark's phases (see bench/__main__.py for the command line and BENCHMARKS.md for results)."""
from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field

from bench import scenarios as sc
from bench.measure import CpuMeter, Latency, rss_mib
from bench.seed import SeededOrder, seed_agent, seed_orders
from bench.shape import WorkflowShape, baseline_spec, old_shapes, read_shape, save_scripts
from bench.stack import BASELINE_QUEUE, TASK_QUEUE, Stack


def say(text: str) -> None:
    print(f"bench: {text}", flush=True)


@dataclass
class Config:
    quick: bool = False
    # Per kind, (a) and its baselines; (b) and its baselines: cases_b. A round of each (60 and 30 cases) runs
    # mostly with all its clients busy: with half as many, a round's start and end (fewer cases in flight,
    # CPUs idle) weighed enough to lift real / same-shape by ~0.04 (BENCHMARKS.md, afternoon of 2026-12-03).
    cases_a: int = 360
    cases_b: int = 180
    concurrency: int = 10  # enough to keep the 2 CPUs busy (more only lengthens each case)
    # The throughput runs are interleaved in this many rounds: their spread shows how much the machine's
    # moments move a ratio.
    rounds: int = 6
    latency_requests: dict[int, int] = field(default_factory=lambda: {1: 50, 10: 150, 50: 400})
    open_rates: tuple[float, ...] = (5, 20, 50)  # help requests per second of the open-loop runs
    open_seconds: float = 20  # each rate lasts about this long (Poisson arrivals)...
    open_min_requests: int = 150  # ...with at least this many requests
    waiting: int = 10_000
    scaling: tuple[int, ...] = (1, 2, 4)
    scaling_cases: int = 60  # cases of (a) per scaling step and per tuning variant
    tuning: bool = True
    tuning_waiting: int = 200  # waiting cases opened per tuning variant
    settle_after: float = 0.2
    get_requests: int = 1500  # reads per 10-client run: its p99 is the 15th-worst, not one stall of 300
    warmup: int = 4  # uncounted cases before each measured run (a fresh worker imports and warms up)
    open_window: int = 0  # waiting cases on their way at a time (0: all at once), see Bench.open_waiting
    worker_knobs: dict = field(default_factory=dict)  # for every worker but the tuning variants
    worker_pool: int | None = None  # DATABASE_POOL_SIZE of the workers (None: the default, 10)

    @classmethod
    def for_quick(cls, waiting: int | None) -> "Config":
        return cls(quick=True, cases_a=10, cases_b=4, concurrency=6, rounds=1,
                   latency_requests={1: 10, 10: 20, 50: 50}, waiting=waiting if waiting is not None else 150,
                   open_seconds=3, open_min_requests=15,
                   scaling=(1, 2), scaling_cases=6, get_requests=40, tuning_waiting=30,
                   warmup=2)


# Worker variants tried on case (a) and on opening waiting cases. Knobs are temporalio Worker arguments
# (+ "runner", see bench/procs.py); the third item is DATABASE_POOL_SIZE of the worker (None: default).
# Baseline kinds of the throughput runs → their spec in Results.baseline_specs.
SPEC_OF = {"c-a": "a", "c-b": "b", "o-a": "old-a", "o-b": "old-b"}

TUNING = [
    ("worker.py as shipped (worker.workflow_runner())", {}, None),
    ("strict sandbox: worker.PASSTHROUGH only (workflow modules re-imported for each run)", {"runner": "strict"}, None),
    ("no sandbox (UnsandboxedWorkflowRunner): the bound of what the sandbox costs", {"runner": "unsandboxed"}, None),
]


@dataclass
class Results:
    machine: dict = field(default_factory=dict)
    config: Config | None = None
    # "a", "b" (real cases), "a-baseline", "b-baseline" (their same-shape baselines), "a-old-baseline", ...
    shapes: dict[str, WorkflowShape] = field(default_factory=dict)
    old: dict = field(default_factory=dict)  # bench/old_shape.json: the recorded shape before the one-workflow change
    # "a", "b", "old-a", "old-b" → bench.shape.baseline_spec (the scripts of bench.baseline.BaselineScript)
    baseline_specs: dict[str, dict] = field(default_factory=dict)
    # "a", "b" (real), "c-a", "c-b" (same-shape baselines), "o-a", "o-b" (old shape's baselines)
    throughput: dict[str, sc.LoadResult] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)  # the same kinds → cases/s of each round
    scaling: dict[int, sc.LoadResult] = field(default_factory=dict)
    tuning: list[dict] = field(default_factory=list)
    latency: dict[tuple[str, int], tuple] = field(default_factory=dict)  # (condition, clients) → (Latency, req/s, cpu)
    open_loop: list[dict] = field(default_factory=list)  # one per rate, see Bench.open_loop_rate
    waiting: dict = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    loadavg: dict[str, str] = field(default_factory=dict)  # "start", "end": /proc/loadavg
    run_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by component over the whole run
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, stack: Stack, cfg: Config, results: Results):
        self.stack, self.cfg, self.r = stack, cfg, results
        self._batch = 0

    def prefix(self, tag: str) -> str:
        self._batch += 1
        return f"{tag}{self._batch}"

    async def workers(self, count: int, baseline: bool = False, replace: bool = True):
        """Worker processes with the run's settings (`--worker-knobs`, `--worker-pool`; none: worker.py)."""
        return await self.stack.start_workers(count, baseline=baseline, knobs=self.cfg.worker_knobs or None,
                                              pool_size=self.cfg.worker_pool, replace=replace)

    # ------------------------------------------------------------------ load runs
    async def load(self, kind: str, n: int, concurrency: int, warmup: int | None = None) -> sc.LoadResult:
        """n cases of `kind` (see Results.throughput) at `concurrency`, after `warmup` uncounted ones."""
        st = self.stack
        warmup = self.cfg.warmup if warmup is None else warmup
        counters = sc.Counters()
        case_ids: list[str] = []
        async with sc.api_client(st.api_url, connections=concurrency * 2 + 10) as http:
            if kind in ("a", "b"):
                status = "paid" if kind == "a" else "delivered"
                orders = await seed_orders(st.pool, self.prefix(kind), n + warmup, status)
                fn = sc.cancellation_case if kind == "a" else sc.withdrawal_case

                async def one(o: SeededOrder):
                    case_ids.append(await fn(http, st.client, counters, o, st.mail))
                items = orders
            else:
                key = SPEC_OF[kind]
                spec = self.r.baseline_specs[key]
                base = self.prefix("base")

                async def one(i: int):
                    case_ids.append(await sc.baseline_case(st.client, counters, f"{base}-{i}", key, spec,
                                                           BASELINE_QUEUE))
                items = list(range(n + warmup))
            if warmup:
                await sc.closed_loop(items[:warmup], min(warmup, concurrency), one)
            counters.conflicts = 0
            case_ids.clear()
            meter = CpuMeter(lambda: st.cpu_roots(baseline=kind in SPEC_OF)).start()
            seconds, durations = await sc.closed_loop(items[warmup:], concurrency, one)
            cpu, _ = meter.stop()
        st.check_alive()
        if counters.accepted:
            say(f"  ({kind}) {counters.accepted} action(s) answered 202 (the case took over "
                "ACTION_ANSWER_TIMEOUT_SECONDS to move on)")
        return sc.LoadResult(cases=n, seconds=seconds, concurrency=concurrency, durations=durations,
                             conflicts=counters.conflicts, cpu=cpu, case_ids=case_ids)

    async def learn_shapes(self) -> None:
        """One real case of each kind, driven through the API; their histories give the baseline's shape."""
        st = self.stack
        counters = sc.Counters()
        async with sc.api_client(st.api_url) as http:
            for kind, status, fn in (("a", "paid", sc.cancellation_case), ("b", "delivered", sc.withdrawal_case)):
                orders = await seed_orders(st.pool, self.prefix(f"shape{kind}"), 3, status)
                case_id = None
                for o in orders:  # the first ones warm the worker up; the last one is read
                    case_id = await fn(http, st.client, counters, o, st.mail)
                shape = await read_shape(st.client, case_id)
                self.r.shapes[kind] = shape
                self.r.baseline_specs[kind] = baseline_spec(shape, self.cfg.settle_after)
                say(f"shape of ({kind}) from {case_id}:\n{shape.describe('    ')}")
        self.r.old = old_shapes()
        for kind in ("a", "b"):
            self.r.baseline_specs[f"old-{kind}"] = {**self.r.old[kind]["spec"], "settle_after": self.cfg.settle_after}
        for key, spec in self.r.baseline_specs.items():
            save_scripts(st.scripts_dir, key, spec["scripts"])

    async def check_baseline_shapes(self) -> None:
        """One baseline case of each spec, counted from its histories like the real ones."""
        st = self.stack
        counters = sc.Counters()
        for key in ("a", "b", "old-a", "old-b"):
            case_id = f"{self.prefix('baseshape')}-{key}"
            await sc.baseline_case(st.client, counters, case_id, key, self.r.baseline_specs[key], BASELINE_QUEUE)
            name = f"{key.removeprefix('old-')}-{'old-' if key.startswith('old-') else ''}baseline"
            self.r.shapes[name] = shape = await read_shape(st.client, case_id)
            say(f"shape of {name}:\n{shape.describe('    ')}")

    # ------------------------------------------------------------------ phases
    async def phase_throughput(self) -> None:
        """(a), (b), their same-shape baselines and the old shape's baselines, interleaved in rounds (a, c-a,
        o-a, b, c-b, o-b, a, ...) so that a change of the machine's load (others' test runs) weighs on each of
        them alike. Both workers stay up."""
        cfg, st = self.cfg, self.stack
        await self.workers(1)
        await self.workers(1, baseline=True, replace=False)
        await self.learn_shapes()
        await self.check_baseline_shapes()
        totals = {"a": cfg.cases_a, "c-a": cfg.cases_a, "o-a": cfg.cases_a,
                  "b": cfg.cases_b, "c-b": cfg.cases_b, "o-b": cfg.cases_b}
        for r in range(cfg.rounds):
            for kind in totals:
                n = totals[kind] // cfg.rounds + (totals[kind] % cfg.rounds if r == cfg.rounds - 1 else 0)
                res = await self.load(kind, n, cfg.concurrency, warmup=None if r == 0 else 0)
                self.r.throughput[kind] = self.r.throughput[kind].add(res) if kind in self.r.throughput else res
                self.r.rounds.setdefault(kind, []).append(res.per_second)
                say(f"round {r + 1}/{cfg.rounds} ({kind}): {res.cases} cases in {res.seconds:.1f} s: "
                    f"{res.per_second:.2f}/s ({res.conflicts} retried after 409/rejection; "
                    f"others used {res.cpu.get('others', 0) / res.seconds * 100:.0f} % of a CPU)")
        await st.stop_workers()

    async def phase_scaling(self) -> None:
        cfg, st = self.cfg, self.stack
        for workers in cfg.scaling:
            await self.workers(workers)
            res = await self.load("a", cfg.scaling_cases, cfg.concurrency)
            self.r.scaling[workers] = res
            say(f"(a) with {workers} worker process(es): {res.per_second:.1f}/s")
        await st.stop_workers()

    async def phase_tuning(self) -> None:
        """Worker variants, each on case (a) and on opening `tuning_waiting` waiting cases; and the workflow
        side of (a) replayed with each runner (bench/replay.py), which the machine's load does not blur."""
        from bench.replay import fetch_histories, replay_cpu_ms

        cfg, st = self.cfg, self.stack
        histories = None
        for label, knobs, pool in TUNING:
            await st.start_workers(1, knobs=knobs or None, pool_size=pool)
            await asyncio.sleep(1)
            rss_idle = rss_mib(st.workers[0].pid)
            res = await self.load("a", cfg.scaling_cases, cfg.concurrency)
            opened = await self.open_waiting(cfg.tuning_waiting)
            if histories is None:
                ids = res.case_ids[:20]
                histories = await fetch_histories(st.client, ids)  # one workflow per case
                replay_cases = len(ids)
            replay = await replay_cpu_ms(histories, knobs.get("runner", "sandbox"), replay_cases)
            self.r.tuning.append({"label": label, "a": res, "rss_idle": rss_idle, "replay_ms": replay, **opened})
            say(f"tuning: {label}: (a) {res.per_second:.2f}/s, replayed in {replay:.1f} ms CPU per case; "
                f"{cfg.tuning_waiting} waiting cases opened at "
                f"{opened['rate']:.1f}/s, worker {opened['cpu']['worker'] / cfg.tuning_waiting * 1000:.0f} ms CPU "
                f"each, RSS {rss_idle:.0f} → {opened['rss_after']:.0f} MiB")
        await st.stop_workers()

    async def open_waiting(self, n: int, concurrency: int = 50, window: int | None = None) -> dict:
        """Opens n cancellations of validated orders through the API's service layer (CaseService.open_case:
        the checks, insert and workflow start of the HTTP endpoint, without HTTP), then waits until every
        open case waits for its seller. Returns timings, CPU and the worker's peak RSS.

        window: at most about this many cases on their way to their waiting stage at a time (started, not
        yet waiting); 0: all started at once. A burst larger than the worker's workflow cache makes it evict
        cases still in progress, which then replay their history at their next task."""
        from domain.models import Actor, CaseKind, Role
        from domain.policy import load_policy
        from starter.service import CaseService

        st = self.stack
        t0 = time.monotonic()
        orders = await seed_orders(st.pool, self.prefix("wait"), n, "validated", per_customer=5, sellers=50) if n else []
        seed_seconds = time.monotonic() - t0
        svc = CaseService(st.pool, st.client, TASK_QUEUE, load_policy())
        peak = {"worker": 0.0, "temporal": 0.0}
        sampling = True

        async def sample():
            while sampling:
                peak["worker"] = max([peak["worker"], *(rss_mib(w.pid) for w in st.workers)])
                peak["temporal"] = max(peak["temporal"], rss_mib(st.temporal.pid))
                await asyncio.sleep(0.5)
        sampler = asyncio.create_task(sample())
        meter = CpuMeter(st.cpu_roots).start()
        t0 = time.monotonic()
        sem = asyncio.Semaphore(concurrency)
        opened = 0

        async def open_one(o: SeededOrder):
            nonlocal opened
            async with sem:
                _, created = await svc.open_case(Actor(role=Role.customer, id=o.customer_id), o.order_id,
                                                 CaseKind.cancellation)
                if not created:
                    raise sc.BenchError(f"no case opened on {o.order_id}")
                opened += 1
                if opened % 2500 == 0:
                    say(f"  {opened}/{n} cases started ({time.monotonic() - t0:.0f} s)")
        window = self.cfg.open_window if window is None else window
        try:
            if window <= 0:
                await asyncio.gather(*(open_one(o) for o in orders))
            else:
                batch = max(1, window // 2)
                for i in range(0, len(orders), batch):
                    while await self._behind() > window - batch:
                        st.check_alive()
                        await asyncio.sleep(0.25)
                    await asyncio.gather(*(open_one(o) for o in orders[i:i + batch]))
            start_seconds = time.monotonic() - t0
            if n >= 1000:
                say(f"{n} cases started in {start_seconds:.1f} s; the worker brings them to awaiting_seller_decision")
            await self._all_waiting(timeout=max(600.0, n / 2))
            all_waiting = time.monotonic() - t0
            cpu, _ = meter.stop()
        finally:
            sampling = False
            await sampler
        return {"n": n, "seed_seconds": seed_seconds, "start_seconds": start_seconds, "all_waiting_seconds": all_waiting,
                "rate": n / all_waiting if all_waiting else 0.0, "cpu": cpu, "rss_peak": peak["worker"],
                "rss_after": max((rss_mib(w.pid) for w in st.workers), default=0.0),
                "temporal_rss_peak": peak["temporal"]}

    async def _behind(self) -> int:
        """Open cases not (yet) waiting for their seller."""
        return await self.stack.pool.fetchval(
            "SELECT count(*) FROM cases WHERE closed_at IS NULL AND stage <> 'awaiting_seller_decision'")

    async def _all_waiting(self, timeout: float = 300) -> float:
        """Until every open case waits for its seller (the worker has caught up). Returns the seconds waited."""
        t0 = time.monotonic()
        last_report = t0
        while True:
            behind = await self._behind()
            if behind == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{behind} open case(s) still not waiting for their seller after {timeout:.0f} s")
            if time.monotonic() - last_report > 60:
                say(f"  {behind} case(s) still on their way to awaiting_seller_decision")
                last_report = time.monotonic()
            self.stack.check_alive()
            await asyncio.sleep(0.5)

    async def phase_latency(self) -> None:
        """POST help-requests (cancellation of a validated order: the case then waits for its seller), each on a
        fresh order, by 1, 10, 50 clients in a closed loop: first with the worker running (it processes the new
        cases meanwhile; it catches up before the next level), then with no worker (the API and the Temporal
        start alone; those cases are processed by the worker of the waiting phase)."""
        cfg, st = self.cfg, self.stack
        await self.workers(1)
        await asyncio.sleep(1)
        self.r.waiting["rss_fresh"] = rss_mib(st.workers[0].pid)
        async with sc.api_client(st.api_url, connections=200) as http:
            for o in await seed_orders(st.pool, self.prefix("lwarm"), 5, "validated"):  # warm-up
                await sc.open_case(http, o, "cancellation")
            for condition in ("worker running", "no worker"):
                if condition == "no worker":
                    await st.stop_workers()
                for clients, n in sorted(cfg.latency_requests.items()):
                    orders = await seed_orders(st.pool, self.prefix("lat"), n, "validated")
                    lat = Latency()

                    async def one(o: SeededOrder):
                        t0 = time.perf_counter()
                        await sc.open_case(http, o, "cancellation")
                        lat.samples.append(time.perf_counter() - t0)
                    meter = CpuMeter(st.cpu_roots).start()
                    seconds, _ = await sc.closed_loop(orders, clients, one)
                    cpu, _ = meter.stop()
                    self.r.latency[(condition, clients)] = (lat, n / seconds, cpu)
                    p50, p95, p99 = lat.pcts()
                    say(f"help requests, {condition}, {clients} client(s): p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                        f"p99 {p99:.0f} ms ({n / seconds:.0f} req/s)")
                    if condition == "worker running":
                        await self._all_waiting()
        st.check_alive()

    async def phase_openloop(self) -> None:
        """Help requests at fixed arrival rates (open loop, Poisson arrivals): each POST sent at its arrival time
        whether the earlier ones were answered or not, the worker running and processing the new cases
        meanwhile. Between rates the worker catches up, so each rate starts from the same state."""
        cfg, st = self.cfg, self.stack
        await self.workers(1)
        async with sc.api_client(st.api_url, connections=1000) as http:
            for o in await seed_orders(st.pool, self.prefix("owarm"), 5, "validated"):  # warm-up
                await sc.open_case(http, o, "cancellation")
            await self._all_waiting()
            for rate in cfg.open_rates:
                res = await self.open_loop_rate(http, rate)
                self.r.open_loop.append(res)
                lat = res["latency"]
                p50, p95, p99 = lat.pcts() if lat.samples else (float("nan"),) * 3
                say(f"open loop at {rate:g}/s: {res['sent']} sent, {res['ok']} answered 201 "
                    f"({res['achieved']:.1f}/s), {res['errors']} error(s); p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                    f"p99 {p99:.0f} ms; worker caught up {res['catch_up_seconds']:.0f} s after the last arrival")
        st.check_alive()

    async def open_loop_rate(self, http, rate: float) -> dict:
        """One open-loop run at `rate` requests/s. The latency of a request counts from its scheduled arrival
        (a driver running late does not hide a slow server); any other answer than 201 (or none within the
        client's timeout) is an error, counted, not raised."""
        cfg, st = self.cfg, self.stack
        n = max(cfg.open_min_requests, round(rate * cfg.open_seconds))
        orders = await seed_orders(st.pool, self.prefix("open"), n, "validated")
        rng = random.Random(int(rate * 1000))
        arrivals, t = [], 0.0
        for _ in orders:
            t += rng.expovariate(rate)
            arrivals.append(t)
        lat = Latency()
        errors: list[str] = []
        lag: list[float] = []
        done_at: list[float] = []

        async def one(o: SeededOrder, due: float) -> None:
            try:
                r = await http.post(f"/v1/orders/{o.order_id}/help-requests", json={"kind": "cancellation"},
                                    headers=sc.bearer(o.customer_token), timeout=30)
                if r.status_code != 201:
                    errors.append(f"{r.status_code} {r.text[:120]}")
                    return
            except Exception as e:  # noqa: BLE001 - a timeout or a reset connection is an error of the run
                errors.append(type(e).__name__)
                return
            now = time.perf_counter()
            lat.samples.append(now - due)
            done_at.append(now)

        meter = CpuMeter(st.cpu_roots).start()
        t0 = time.perf_counter()
        tasks = []
        for o, at in zip(orders, arrivals):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag.append(max(0.0, -delay))
            tasks.append(asyncio.create_task(one(o, t0 + at)))
        await asyncio.gather(*tasks)
        end = time.perf_counter()
        cpu, _ = meter.stop()
        caught = await self._all_waiting(timeout=max(300.0, n))
        span = arrivals[-1]
        ok = len(lat.samples)
        achieved = ok / (max(done_at) - t0) if done_at else 0.0
        offered = n / span if span else 0.0
        return {"rate": rate, "sent": n, "seconds": end - t0, "offered": offered, "ok": ok, "achieved": achieved,
                "errors": len(errors), "error_kinds": sorted(set(errors))[:3], "latency": lat, "cpu": cpu,
                "driver_lag_p99_ms": sorted(lag)[int(0.99 * (len(lag) - 1))] * 1000 if lag else 0.0,
                "catch_up_seconds": caught,
                "held": not errors and achieved >= 0.95 * offered}

    async def phase_waiting(self) -> None:
        """Tops the open cases up to N (cancellations of validated orders, each waiting for its seller under a
        one-business-day deadline and a reminder timer), with a fresh worker subprocess; then the worker's RSS
        and the API's read latencies with them all open."""
        cfg, st = self.cfg, self.stack
        w = self.r.waiting
        already = await st.pool.fetchval("SELECT count(*) FROM cases WHERE closed_at IS NULL")
        behind = await st.pool.fetchval(
            "SELECT count(*) FROM cases WHERE closed_at IS NULL AND stage <> 'awaiting_seller_decision'")
        n = max(0, cfg.waiting - already)
        await self.workers(1)
        worker = st.workers[0]
        await asyncio.sleep(1)
        w.setdefault("rss_fresh", rss_mib(worker.pid))
        say(f"{already} case(s) already open (earlier phases); opening {n} more")
        opened = await self.open_waiting(n)
        w.update(opened)
        w["already_open"] = already
        w["processed"] = n + behind  # cases the worker brought to their waiting stage in this phase
        say(f"all {already + n} open cases waiting after {opened['all_waiting_seconds']:.1f} s")
        await asyncio.sleep(3)
        w["rss_after"] = rss_mib(worker.pid)
        w["temporal_rss"] = rss_mib(st.temporal.pid)
        w["open_cases"] = await st.pool.fetchval("SELECT count(*) FROM cases WHERE closed_at IS NULL")
        w["open_workflows"] = await self._count_open_workflows()

        # Reads with them open, as a care agent.
        agent = await seed_agent(st.pool)
        ids = [r["case_id"] for r in await st.pool.fetch("SELECT case_id FROM cases WHERE closed_at IS NULL")]
        rng = random.Random(7)
        async with sc.read_client(connections=50) as http:
            for name, path_fn in (("get", lambda: f"/v1/cases/{rng.choice(ids)}"), ("list", lambda: "/v1/cases")):
                for clients in (1, 10):
                    lat = Latency()

                    async def one(_):
                        t = time.perf_counter()
                        async with http.get(st.api_url + path_fn(), headers=sc.bearer(agent)) as r:
                            body = await r.read()
                            if r.status != 200:
                                raise sc.BenchError(f"GET {r.url}: {r.status} {body[:200]!r}")
                        lat.samples.append(time.perf_counter() - t)
                    # Warm-up at the measured concurrency: each client's connection is open before the count.
                    await sc.closed_loop(list(range(2 * clients + 8)), clients, one)
                    lat.samples.clear()
                    requests = cfg.get_requests if clients > 1 else cfg.get_requests // 3
                    seconds, _ = await sc.closed_loop(list(range(requests)), clients, one)
                    w[f"{name}_{clients}"] = (lat, requests / seconds)
                    p50, p95, p99 = lat.pcts()
                    say(f"GET {name}, {clients} client(s), {w['open_cases']} open cases: p50 {p50:.0f} ms, "
                        f"p95 {p95:.0f} ms, p99 {p99:.0f} ms")
        w["rss_end"] = rss_mib(worker.pid)
        say(f"worker RSS: fresh {w.get('rss_fresh', 0):.0f} MiB, peak {w['rss_peak']:.0f} MiB, after "
            f"{w['rss_after']:.0f} MiB; Temporal server {w['temporal_rss']:.0f} MiB")
        await st.stop_workers()

    async def _count_open_workflows(self) -> int:
        try:
            resp = await self.stack.client.count_workflows("ExecutionStatus = 'Running'")
            return resp.count
        except Exception as e:  # visibility without count support: the read model's figure stands
            say(f"could not count running workflows: {e}")
            return -1


async def run(cfg: Config, phases: list[str], keep_logs: bool = False) -> Results:
    from bench.measure import machine

    from bench.stack import clean_leftovers

    clean_leftovers(say)
    results = Results(machine=machine(), config=cfg)
    results.loadavg["start"] = _loadavg()
    t_start = time.monotonic()
    stack = Stack(settle_after=cfg.settle_after, keep_logs=keep_logs)
    meter = CpuMeter(lambda: {"bench": [os.getpid()], **({"postgres": stack.cpu_roots()["postgres"]}
                                                          if stack.pg else {})}, ).start()
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
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: stopping the stack")
        raise
    except BaseException:
        say(f"failed; logs of the stack in {stack.tmp / 'logs'}")
        stack.keep_logs = True
        raise
    finally:
        results.run_cpu, _ = meter.stop()
        await stack.stop()
        results.total_seconds = time.monotonic() - t_start
        results.loadavg["end"] = _loadavg()
    return results


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"
