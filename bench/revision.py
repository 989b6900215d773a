"""Benchmarking a committed revision instead of the working tree (`--code REV`, a git-archive
export and re-exec), and naming the code a run measured."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE_LABEL_ENV = "WORKPOOLS_BENCH_CODE"
CODE_DIR_ENV = "WORKPOOLS_BENCH_CODE_DIR"


def export_revision(rev: str) -> tuple[str, Path]:
    """(short sha, directory): the revision exported with `git archive` (read-only for the
    repository) into a new temporary directory named workpools-code-<sha>-*."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix=f"workpools-code-{sha}-"))
    archive = subprocess.run(
        ["git", "archive", "--format=tar", sha], cwd=ROOT, env=env, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return sha, target


def serve_revision_options(directory: Path) -> dict[str, object]:
    """ReplicaSet options that run `workpools serve` from an exported revision (the command lived
    in handlers/cli.py before the CLI got its own package)."""
    entry = "cli.main" if (directory / "cli" / "main.py").exists() else "handlers.cli"
    return {
        "command": [sys.executable, "-c", f"from {entry} import main; main()", "serve", "--log-level", "WARNING"],
        "cwd": directory,
        "env": {"PYTHONPATH": str(directory)},
    }


def run_on_code(script: str, argv: Sequence[str] | None = None) -> None:
    """`--code REV`: benchmark a committed revision instead of the working tree (e.g. while the
    working tree is mid-edit). Call it at the top of a benchmark script, before importing the
    project (client, schemas...).

    With `--code worktree` (the default) this returns at once. Otherwise the revision is exported
    with `git archive` (read-only for the repository) into a temporary directory, this
    checkout's bench/*.py are copied over it, and the script re-executes itself from there with
    PYTHONPATH pointing at it: the benchmark, its client and the replicas it starts (whose
    environment it is) all run that revision. The directory is removed at exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rev = None
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            rev = argv[i + 1]
            del argv[i : i + 2]
            break
        if arg.startswith("--code="):
            rev = arg.split("=", 1)[1]
            del argv[i]
            break
    if rev is None or rev == "worktree" or os.environ.get(CODE_DIR_ENV):
        return
    import shutil

    sha, target = export_revision(rev)
    (target / "bench").mkdir(exist_ok=True)
    for source in (ROOT / "bench").glob("*.py"):
        shutil.copy2(source, target / "bench" / source.name)
    print(f"running {script} on revision {rev} ({sha}), exported to {target}", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        CODE_LABEL_ENV: f"{sha} ({rev}, exported)",
        CODE_DIR_ENV: str(target),
    }
    os.execve(sys.executable, [sys.executable, str(target / "bench" / script), *argv], env)


def remove_exported_code() -> None:
    """Remove the directory `run_on_code` exported (call at the very end of the script)."""
    target = os.environ.get(CODE_DIR_ENV)
    if (
        target
        and Path(target).name.startswith("workpools-code-")
        and Path(target).parent == Path(tempfile.gettempdir())
    ):
        import shutil

        shutil.rmtree(target, ignore_errors=True)


def code_version() -> str:
    """`<HEAD> (+N changed files)` of the project the replicas run (read-only git calls)."""
    if os.environ.get(CODE_LABEL_ENV):
        return os.environ[CODE_LABEL_ENV]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never write the index
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=5
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}" + (f" + {len(changed)} uncommitted file(s)" if changed else "")
