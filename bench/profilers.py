"""Profilers around a measured window: py-spy attached to processes, or bench/profiling.py's
CPU-time sampler in the replicas."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class PySpy:
    """`py-spy record` (raw collapsed stacks, wall clock, idle excluded, non-blocking) on some
    processes from `start()` until `stop()` (SIGINT to the py-spy processes it started, which
    makes them write their output). Summarise the files with bench.profiling.

        spy = PySpy({"replica-0": pid}, rate=200); await spy.start(); ...; files = await spy.stop()
    """

    def __init__(self, targets: dict[str, int], *, rate: int = 200, out: str | Path | None = None) -> None:
        self.targets = targets
        self.rate = rate
        self.out = Path(out) if out else Path(tempfile.mkdtemp(prefix="workpools-py-spy-"))
        self._procs: list[tuple[str, Path, asyncio.subprocess.Process]] = []
        self.errors: dict[str, str] = {}

    async def start(self) -> None:
        spy = Path(sys.executable).parent / "py-spy"
        self.out.mkdir(parents=True, exist_ok=True)
        for name, pid in self.targets.items():
            path = self.out / f"{name}.raw"
            proc = await asyncio.create_subprocess_exec(
                str(spy),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                str(self.rate),
                "--nonblocking",
                "--full-filenames",
                "-o",
                str(path),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            self._procs.append((name, path, proc))
        await asyncio.sleep(0.5)  # attached

    async def stop(self) -> dict[str, Path]:
        files = {}
        for _name, _path, proc in self._procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        for name, path, proc in self._procs:
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 15)
            except TimeoutError:
                proc.kill()
                _, err = await proc.communicate()
            if path.exists():
                files[name] = path
            elif err:
                self.errors[name] = err.decode(errors="replace")[-300:]
        self._procs.clear()
        return files


class Profiler:
    """Profiles replicas (and this process) over measured windows, one of two ways:

    * "py-spy": `py-spy record` (wall clock, idle excluded, non-blocking) attached per window;
    * "cpu": bench/profiling.py's CPU-time sampler — replicas must be started under its wrapper
      (`ReplicaSet(..., **Profiler.replica_options("cpu", dir))`), SIGUSR1/SIGUSR2 per window;
      this process samples itself. Exact about CPU on a busy machine, where py-spy also counts
      time a process is runnable but waiting for a core.

    `await start()`, run the window, `await stop()` -> {name: samples} (load_collapsed format),
    names "replica-<i>" and "self"."""

    def __init__(self, kind: str, replica_pids: Sequence[int], out: Path, *, include_self: bool = True) -> None:
        self.kind, self.pids, self.out, self.include_self = kind, list(replica_pids), Path(out), include_self
        self.errors: dict[str, str] = {}
        self._spy: PySpy | None = None
        self._sampler: Any = None
        self._window = 0

    @staticmethod
    def replica_options(kind: str, out: Path) -> dict[str, Any]:
        if kind != "cpu":
            return {}
        from bench.profiling import PROFILE_INTERVAL_ENV, PROFILE_OUT_ENV, profiled_serve_command

        return {
            "command": profiled_serve_command(),
            "env": {PROFILE_OUT_ENV: str(Path(out) / "replica-{pid}.collapsed"), PROFILE_INTERVAL_ENV: "0.002"},
        }

    async def start(self) -> None:
        self._window += 1
        names = {f"replica-{i}": pid for i, pid in enumerate(self.pids)}
        if self.kind == "py-spy":
            targets = names | ({"self": os.getpid()} if self.include_self else {})
            self._spy = PySpy(targets, out=self.out / f"window-{self._window}")
            await self._spy.start()
            return
        from bench.profiling import CpuSampler

        for path in (self.out / f"replica-{pid}.collapsed" for pid in self.pids):
            path.unlink(missing_ok=True)
        for pid in self.pids:
            os.kill(pid, signal.SIGUSR1)
        if self.include_self:
            self._sampler = CpuSampler(0.002)
            self._sampler.start()

    async def stop(self) -> dict[str, list]:
        from bench.profiling import load_collapsed

        if self._spy is not None:
            files = await self._spy.stop()
            self.errors.update(self._spy.errors)
            self._spy = None
            return {name: load_collapsed(path) for name, path in files.items()}
        result = {}
        if self._sampler is not None:
            self._sampler.stop()
            path = self.out / f"self-{self._window}.collapsed"
            self._sampler.dump(path)
            result["self"] = load_collapsed(path)
            self._sampler = None
        for pid in self.pids:
            os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        for i, pid in enumerate(self.pids):
            path = self.out / f"replica-{pid}.collapsed"
            while not path.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if path.exists():
                kept = path.rename(self.out / f"replica-{i}-{pid}-{self._window}.collapsed")
                result[f"replica-{i}"] = load_collapsed(kept)
            else:
                self.errors[f"replica-{i}"] = "no profile written"
        return result
