"""CPU profiling for benchmarks: an in-process CPU-time sampler, a `workpools serve` wrapper that
runs it on signals, and summaries of collapsed stacks (this sampler's or `py-spy --format raw`).

Why a CPU-time sampler: py-spy samples wall-clock. On a busy 2-core machine a replica that is
runnable but not running (e.g. preempted right after a loopback `send()` woke Redis) is sampled
where it stands, so py-spy over-weights syscalls. `setitimer(ITIMER_PROF)` fires per CPU time
used by the process (user + system), so the samples are where the CPU actually went.

Replica wrapper (ReplicaSet(command=profiled_serve_command(...))):

    python -m bench.profiling serve --log-level WARNING
        SIGUSR1: start sampling; SIGUSR2: stop and write collapsed stacks to
        $WORKPOOLS_BENCH_PROFILE_OUT (then a later SIGUSR1 starts a fresh profile).

Collapsed stacks ("root;...;leaf count", frames "func (file:line)") open in speedscope.app or
flamegraph.pl.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

PROFILE_OUT_ENV = "WORKPOOLS_BENCH_PROFILE_OUT"
PROFILE_INTERVAL_ENV = "WORKPOOLS_BENCH_PROFILE_INTERVAL"


# --------------------------------------------------------------------------------------------
# Sampling


class CpuSampler:
    """Statistical profiler on CPU time: every `interval` CPU seconds of this process (SIGPROF),
    the main thread's Python stack is counted. Time in C code (syscalls, Cython, pydantic-core)
    lands on the Python frame that called it. Overhead: a few % at 2 ms."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.stacks: Counter[tuple] = Counter()
        self.running = False

    def _on_sigprof(self, signum: int, frame: FrameType | None) -> None:
        stack = []
        while frame is not None:
            stack.append((frame.f_code, frame.f_lineno))
            frame = frame.f_back
        self.stacks[tuple(stack)] += 1

    def start(self) -> None:
        self.stacks.clear()
        signal.signal(signal.SIGPROF, self._on_sigprof)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        self.running = True

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_IGN)
        self.running = False

    def collapsed(self) -> list[str]:
        lines = []
        for stack, count in self.stacks.items():
            frames = [f"{code.co_qualname} ({code.co_filename}:{line})" for code, line in reversed(stack)]
            lines.append(f"{';'.join(frames)} {count}")
        return lines

    def dump(self, path: str | Path) -> None:
        tmp = Path(f"{path}.tmp")
        tmp.write_text("\n".join(self.collapsed()) + "\n")
        tmp.replace(path)  # readers see the whole file or none


def profiled_serve_command(log_level: str = "WARNING") -> list[str]:
    """`workpools serve` under the sampler (run with cwd = project root)."""
    return [sys.executable, "-m", "bench.profiling", "serve", "--log-level", log_level]


def _serve_main() -> None:
    out = os.environ.get(PROFILE_OUT_ENV, "/tmp/workpools-replica-{pid}.collapsed").replace("{pid}", str(os.getpid()))
    sampler = CpuSampler(float(os.environ.get(PROFILE_INTERVAL_ENV, "0.002")))

    def start(*_: object) -> None:
        sampler.start()

    def stop(*_: object) -> None:
        sampler.stop()
        sampler.dump(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from cli.main import main

    sys.argv = ["workpools", *sys.argv[1:]]
    main()


# --------------------------------------------------------------------------------------------
# Summaries of collapsed stacks

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    def short(self) -> str:
        file = re.sub(r".*/site-packages/", "", self.file)
        file = re.sub(r".*/lib/python3\.\d+/", "", file)
        file = file.replace(str(Path(__file__).resolve().parents[1]) + "/", "")
        return f"{self.func} ({file})"


def load_collapsed(path: str | Path) -> list[tuple[list[Frame], int]]:
    samples = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = []
        for part in stack.split(";"):
            m = _FRAME.match(part)
            frames.append(Frame(m["func"], m["file"]) if m else Frame(part, ""))
        samples.append((frames, int(count)))
    return samples


PROJECT = str(Path(__file__).resolve().parents[1])
STDLIB = os.path.dirname(os.__file__)


def category(frame: Frame) -> str:
    f = frame.file
    for marker, name in (
        ("/faststream/", "FastStream"),
        ("/fast_depends/", "FastStream"),  # its DI / argument layer
        ("/anyio/", "FastStream"),  # FastStream's task groups
        ("/sqlalchemy/", "SQLAlchemy"),
        ("/asyncpg/", "asyncpg"),
        ("/pydantic_core/", "pydantic"),
        ("/pydantic/", "pydantic"),
        ("/redis/", "redis-py"),
        ("/typer/", "startup"),
        ("/alembic/", "startup"),
    ):
        if marker in f:
            return name
    if f.startswith(PROJECT + "/bench/"):
        return "bench driver"
    if f.startswith(PROJECT + "/client/"):
        return "app: client"
    if f.startswith(PROJECT + "/handlers/"):
        return "app: handlers"
    if f.startswith(PROJECT + "/services/"):
        return "app: services"
    if f.startswith(PROJECT + "/schemas/"):
        return "app: schemas"
    if f.startswith(PROJECT + "/"):
        return "app: other"
    if "/asyncio/" in f or f.endswith("/selectors.py"):
        return "asyncio"
    if f.startswith(STDLIB) and "site-packages" not in f:
        return "stdlib"
    return "other"


def _after_loop(frames: Sequence[Frame]) -> Sequence[Frame]:
    """The frames above the innermost event-loop iteration: what the loop is running now (the
    frames below it, e.g. `main` or the CLI, own nothing)."""
    for i in range(len(frames) - 1, -1, -1):
        if frames[i].func.endswith("_run_once") and "asyncio" in frames[i].file:
            return frames[i + 1 :]
    return frames


def owner(frames: Sequence[Frame]) -> str:
    """Who the sample's CPU is for: the deepest frame of a library or of the app; stdlib and
    asyncio frames below it (json, uuid, transports...) count for it. Samples with only the
    event loop above them are the loop itself, or socket reads and protocol callbacks (where
    asyncpg's Cython protocol parses replies: its frames are invisible to a Python sampler)."""
    running = _after_loop(frames)
    for frame in reversed(running):
        cat = category(frame)
        if cat not in ("asyncio", "stdlib"):
            return cat
    if any("_read_ready" in f.func or "data_received" in f.func for f in running):
        return "asyncio: socket recv + protocol callbacks"
    return "asyncio: event loop (incl. epoll)"


def _has(frames: Sequence[Frame], func: str | None = None, file: str | None = None) -> bool:
    return any((func is None or re.search(func, f.func)) and (file is None or re.search(file, f.file)) for f in frames)


_P = re.escape(PROJECT)

# Exclusive parts of a replica's request path: a sample goes to the FIRST stage whose test
# matches its stack (so the order is a priority: asyncpg under BEGIN counts as asyncpg, the
# reply's PUBLISH inside FastStream's pipeline counts as the reply, ...). Generic over handlers.
# SQLAlchemy's sync engine runs in greenlets: those samples' stacks start at the greenlet (no
# event loop below them), hence the sync-engine names (Engine.connect, Connection.close...).
_SA_COMMIT = (
    r"AsyncTransaction\.__aexit__$|AsyncConnection\.__aexit__$|AsyncConnection\.close$|"
    r"^Connection\.close$|TransactionalContext\.__exit__$|_commit_impl$|do_commit$|_checkin$|"
    r"_finalize_fairy$|_connection_commit_impl$|do_rollback$|_reset$"
)
_SA_BEGIN = (
    r"AsyncEngine\.begin$|AsyncConnection\.start$|AsyncTransaction\.start$|AsyncEngine\.connect$|"
    r"^Engine\.connect$|^Connection\.begin$|^Connection\.__init__$|_checkout$|do_begin$|_begin_impl$"
)
_SA_EXECUTE = (
    r"AsyncConnection\.execute$|^Connection\.execute$|_execute_clauseelement$|_execute_context$|"
    r"_exec_single_context$|_execute_on_connection$|greenlet_spawn$"
)

REPLICA_STAGES: tuple[tuple[str, object], ...] = (
    ("asyncpg (Python + Cython it calls; BEGIN, query, COMMIT)", lambda fs: _has(fs, file=r"/asyncpg/")),
    (
        "SQLAlchemy: compile / cache key / bind params",
        lambda fs: _has(
            fs,
            r"_compile_w_cache$|_generate_cache_key$|_gen_cache_key$|construct_params$|"
            r"SQLCompiler\.|_process_parameters_for_postcompile|_init_compiled$",
        ),
    ),
    (
        "SQLAlchemy: result rows (incl. JSONB decode)",
        lambda fs: (
            _has(fs, file=r"/sqlalchemy/engine/(result|cursor|row)\.py")
            or _has(fs, r"_jsonb_decoder")
            or _has(fs, r"_setup_result_proxy$")
        ),
    ),
    ("SQLAlchemy: commit + pool return", lambda fs: _has(fs, _SA_COMMIT)),
    ("SQLAlchemy: connect + begin (pool checkout)", lambda fs: _has(fs, _SA_BEGIN)),
    ("SQLAlchemy: execute (rest: greenlet, context, dialect)", lambda fs: _has(fs, _SA_EXECUTE)),
    (
        "SQLAlchemy: building statements (select/where in services)",
        lambda fs: _has(fs, file=r"/sqlalchemy/") and _has(fs, file=_P + r"/services/"),
    ),
    ("SQLAlchemy: other", lambda fs: _has(fs, file=r"/sqlalchemy/")),
    (
        "pydantic: result models (services, handlers)",
        lambda fs: _has(fs, file=_P + r"/(services|handlers)/") and _has(fs, file=r"/pydantic|" + _P + "/schemas/"),
    ),
    ("services: own code", lambda fs: _has(fs, file=_P + r"/services/")),
    (
        "reply: build + encode + PUBLISH (FastStream + redis-py)",
        lambda fs: _has(
            fs,
            r"FakePublisher\.|publish_scope$|RedisFastProducer\.publish$|as_publish_command$|"
            r"_get_response_publisher$|_make_response_publisher$",
        ),
    ),
    ("handlers: own code", lambda fs: _has(fs, file=_P + r"/handlers/(?!cli)")),
    ("ack: XACK (FastStream + redis-py)", lambda fs: _has(fs, r"__ack$|\.ack$")),
    (
        "FastStream: fetch (XREADGROUP + batch parse)",
        lambda fs: _has(fs, r"_get_msgs$|_xreadgroup$|_StreamHandlerMixin\._consume$"),
    ),
    ("FastStream: fast_depends (decode + validate args)", lambda fs: _has(fs, file=r"/fast_depends/")),
    ("FastStream: log context (deepcopy of StreamSub per message)", lambda fs: _has(fs, r"get_log_context$")),
    ("FastStream: parse message (parser, uuid4 correlation id)", lambda fs: _has(fs, r"parse_message$|is_suitable$")),
    (
        "FastStream: pipeline rest (middlewares, exit stacks, context, logging)",
        lambda fs: _has(fs, r"process_message$"),
    ),
    (
        "FastStream: task per message + memory stream (anyio, max_workers)",
        lambda fs: _has(
            fs,
            r"_serve_consume_queue$|TaskHandle|TaskGroup|CancelScope|MemoryObject|"
            r"UnreliableObjectReceiveStream|_consume_msg$",
        ),
    ),
    ("FastStream: other", lambda fs: _has(fs, file=r"/faststream/|/anyio/")),
    ("redis-py: other", lambda fs: _has(fs, file=r"/redis/")),
    (
        "asyncio: socket recv + protocol callbacks (asyncpg Cython parsing)",
        lambda fs: _has(fs, r"_read_ready|data_received"),
    ),
    ("asyncio: event loop (scheduling, epoll)", lambda fs: True),
)

CLIENT_STAGES: tuple[tuple[str, object], ...] = (
    ("wire.encode (json)", lambda fs: _has(fs, r"^encode", r"/schemas/wire")),
    ("wire.decode (json)", lambda fs: _has(fs, r"^decode", r"/schemas/wire")),
    (
        "XADD request (redis-py, socket send)",
        lambda fs: _has(fs, r"RpcTransport\.request$") and _has(fs, file=r"/redis/"),
    ),
    ("reply pub/sub read + parse (redis-py)", lambda fs: _has(fs, r"_read_replies$") and _has(fs, file=r"/redis/")),
    ("reply model validation (pydantic + schemas)", lambda fs: _has(fs, file=r"/pydantic|" + _P + "/schemas/")),
    ("uuid4 (correlation id)", lambda fs: _has(fs, r"^uuid4$")),
    ("asyncio.wait_for + futures", lambda fs: _has(fs, r"^wait_for$|_release_waiter|create_future")),
    ("client: own code (transport, _deliver, _call)", lambda fs: _has(fs, file=_P + r"/client/")),
    ("bench driver", lambda fs: _has(fs, file=_P + r"/bench/")),
    ("redis-py: other", lambda fs: _has(fs, file=r"/redis/")),
    ("asyncio: socket recv + protocol callbacks", lambda fs: _has(fs, r"_read_ready|data_received")),
    ("asyncio: event loop (scheduling, epoll)", lambda fs: True),
)


@dataclass
class ProfileSummary:
    total: int
    owners: Counter
    stages: Counter
    stage_order: list[str]
    leaves: Counter

    def pct(self, n: int) -> float:
        return 100.0 * n / self.total if self.total else 0.0


def summarize(
    samples: Iterable[tuple[list[Frame], int]], stages: Sequence[tuple[str, object]] = REPLICA_STAGES
) -> ProfileSummary:
    owners: Counter = Counter()
    stage_counts: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for frames, count in samples:
        total += count
        owners[owner(frames)] += count
        running = _after_loop(frames)
        for label, test in stages:
            if test(running):  # type: ignore[operator]
                stage_counts[label] += count
                break
        if frames:
            leaves[(frames[-1].short(), category(frames[-1]))] += count
    return ProfileSummary(total, owners, stage_counts, [label for label, _ in stages], leaves)


# --------------------------------------------------------------------------------------------
# perf (native view: interpreter vs C extensions vs kernel)


def entry_points(samples: Any) -> tuple[int, Counter]:
    """Profile samples (load_collapsed) by the project code that runs them, inclusive of
    everything it calls: a handler registered in handlers/ (`register.<locals>.X`: a request,
    the ready-mark consumer, a worker poll), or a background loop (handlers/worker_channel.py,
    replica/foreman.py, outbox.py, recovery.py). Other samples under handlers/ or transport/ are
    the request pipeline around the handler (FastStream decoding and validating the body,
    encoding and publishing the reply); the rest is the framework and the event loop (reading
    requests, acks, scheduling) — and SQLAlchemy's database work, which runs in greenlets whose
    stacks do not show the handler that started it (so the handlers' shares are lower bounds)."""
    rooms = ("handlers", "replica", "transport")
    background = ("worker_channel.py", "foreman.py", "outbox.py", "recovery.py")
    counts: Counter = Counter()
    total = 0
    for frames, count in samples:
        total += count
        label = None
        in_project = False
        for frame in _after_loop(frames):  # what the event loop runs now (not the serve command around it)
            if "site-packages" in frame.file:
                continue
            room = next((r for r in rooms if f"/{r}/" in frame.file), None)
            if room is None or room == "replica" and frame.file.endswith(("/serve.py", "/app.py")):
                continue
            short = f"{room}/{frame.file.rsplit(f'/{room}/', 1)[1]}"
            in_project = True
            if "register.<locals>." in frame.func:
                label = f"{frame.func.split('register.<locals>.', 1)[1]} ({short})"
                break
            if short.rsplit("/", 1)[1] in background and "consume_scope" not in frame.func:
                label = f"{frame.func} ({short})"
                break
        counts[
            label
            or (
                "request pipeline around the handler (FastStream decode + validate, reply encode + publish)"
                if in_project
                else "no project frame: framework, event loop, SQLAlchemy in greenlets"
            )
        ] += count
    return total, counts


def perf_available() -> bool:
    return shutil.which("perf") is not None


def perf_record_command(pid: int, seconds: float, output: str | Path, frequency: int = 999) -> list[str]:
    return [
        "perf",
        "record",
        "-q",
        "-e",
        "cpu-clock",
        "-F",
        str(frequency),
        "-p",
        str(pid),
        "-o",
        str(output),
        "--",
        "sleep",
        f"{seconds:g}",
    ]


def perf_report(data: str | Path, sort: str = "dso", limit: int = 15) -> list[tuple[float, str]]:
    """[(percent, name)] from `perf report --sort <sort>`."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", sort, "--stdio", "-q"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if m:
            rows.append((float(m[1]), m[2]))
    return rows[:limit]


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve_main()
    else:
        for path in sys.argv[1:]:
            s = summarize(load_collapsed(path))
            print(path, s.total, "samples")
            for who, n in s.owners.most_common():
                print(f"  {s.pct(n):5.1f}%  {who}")
