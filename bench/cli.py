"""Wall time of `mail-proxy --help` and `mail-proxy list`.

hyperfine is used when installed; otherwise each command runs ``--runs`` times as a
subprocess (after warm-up runs) and the median is reported. The console script of this
interpreter is run directly: a version manager's shim (pyenv) adds its own start-up, which is
measured separately when one is found on PATH. ``python -c pass`` is the interpreter floor.
``MAIL_PROXY_HOME`` points at an empty temporary folder so no real instance is touched.

    python -m bench.cli [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("mail-proxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mail_proxy"]


def timed_runs(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    for _ in range(2):  # warm the page cache and .pyc files
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        samples.append(time.perf_counter() - t0)
    return {"median_ms": round(statistics.median(samples) * 1000, 1),
            "min_ms": round(min(samples) * 1000, 1), "runs": runs}


def hyperfine(cmd: list[str], runs: int, env: dict[str, str], folder: Path) -> dict[str, float]:
    out = folder / "hyperfine.json"
    subprocess.run(["hyperfine", "-N", "--warmup", "2", "--runs", str(runs), "--export-json",
                    str(out), " ".join(cmd)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads(out.read_text())["results"][0]
    return {"median_ms": round(r["median"] * 1000, 1), "min_ms": round(r["min"] * 1000, 1),
            "runs": runs}


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with common.workdir(args.workdir) as folder:
        env = dict(os.environ, MAIL_PROXY_HOME=str(folder / "home"))
        env.pop("GMP_INSTANCE", None)
        use_hf = shutil.which("hyperfine") is not None and not args.no_hyperfine
        out["tool"] = "hyperfine" if use_hf else "subprocess"
        script = console_script()

        def measure(cmd: list[str]) -> dict[str, float]:
            return hyperfine(cmd, args.runs, env, folder) if use_hf else \
                timed_runs(cmd, args.runs, env)

        out["python_floor"] = measure([sys.executable, "-c", "pass"])
        out["help"] = measure([*script, "--help"])
        out["list"] = measure([*script, "list"])
        shim = shutil.which("mail-proxy")
        if shim and ".pyenv/shims" in shim:
            out["help_via_pyenv_shim"] = measure([shim, "--help"])
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--no-hyperfine", action="store_true")
    p.add_argument("--workdir", default=None)
    p.add_argument("--quick", action="store_true", help="tiny workload (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    common.emit("cli", {"machine": common.machine(), **run_bench(args)})


if __name__ == "__main__":
    main()
