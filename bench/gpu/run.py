"""The GPU check's sections, in one process: parity, model speed, the server ramp.

Run through ``bench/gpu/run.sh`` (which installs the project first); see its header and
docs/deploy.md ("On a lent GPU"). Every section writes ``results.json`` and ``report.md``
again when it ends, so that a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_speed  # noqa: E402
import report  # noqa: E402
import server_ramp  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["torch", "numpy", "grpcio", "grpcio-health-checking", "grpcio-reflection",
            "protobuf", "soundfile", "soxr", "prometheus-client", "uvloop", "onnxruntime",
            "pytest", "pytest-asyncio", "vadnet"]  # fmt: skip


@dataclass
class Sizes:
    """What each section runs. ``full`` fits the 8 minutes of a lent H100/H200 (16 cores);
    ``quick`` is the rehearsal on the 2-core development machine (about 2 minutes)."""

    parity_streams: int
    batch_sizes: list[int]
    dtypes: list[str]
    cpu_batch_sizes: list[int]  # the CPU beside a GPU, one thread: per-core cost
    long_file_s: float
    forward_batches: list[int]
    setups: list[server_ramp.Setup]
    plan: server_ramp.Plan
    min_s: float = 0.3  # timing floor per batch size
    notes: list[str] = field(default_factory=list)


def sizes_for(device: str, quick: bool) -> Sizes:
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    # The server gets the first half of the CPUs, the load generator the rest: the client
    # costs about what the server's front end costs per chunk, so it needs as many cores.
    server_cpus = ",".join(map(str, cpus[:half]))
    client_cpus = ",".join(map(str, cpus[half:] or cpus))
    cuda = device.startswith("cuda")
    if quick:
        plan = server_ramp.Plan(
            start=10, max_streams=40, duration_s=3.0, server_cpus=server_cpus,
            client_cpus=client_cpus, client_procs=1,
        )  # fmt: skip
        setups = [server_ramp.Setup(device, 1)]
        if cuda:
            setups.append(server_ramp.Setup("cpu", 1))
        return Sizes(
            8, [1, 16, 64], ["float32"], [1, 16] if cuda else [], 60.0, [1, 4], setups, plan
        )
    n_server = len(cpus[:half])
    plan = server_ramp.Plan(
        start=250, max_streams=16384, duration_s=8.0, server_cpus=server_cpus,
        client_cpus=client_cpus, client_procs=max(1, len(cpus) - half),
    )  # fmt: skip
    if cuda:
        # Most processes first (streams per GPU), then the CPU baseline on the same cores,
        # then fewer processes per GPU for the scaling.
        setups = [
            server_ramp.Setup(device, n_server, max_batch_size=1024),
            server_ramp.Setup("cpu", n_server),
            server_ramp.Setup(device, 1, max_batch_size=1024),
            server_ramp.Setup(device, max(1, n_server // 2), max_batch_size=1024),
        ]
        dtypes = ["float32", "float16", "bfloat16"]
        sizes = [1, 4, 16, 64, 256, 1024, 4096]
        return Sizes(64, sizes, dtypes, [1, 64, 256], 600.0, [1, 16, 64], setups, plan)
    setups = [server_ramp.Setup("cpu", w) for w in sorted({n_server, 1})]
    return Sizes(48, [1, 4, 16, 64, 256, 1024], ["float32"], [], 600.0, [1, 16], setups, plan)


# --- sections --------------------------------------------------------------------------
def environment(device: str) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    import vadnet.model

    env = {
        "python": sys.version.split()[0],
        "versions": versions,
        "vadnet_from": str(Path(vadnet.model.__file__).parent),
        "torch_cuda": torch.version.cuda,
        "cpus": len(os.sched_getaffinity(0)),
        "cuda_available": torch.cuda.is_available(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        try:
            smi = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"]
            env["nvidia_smi"] = subprocess.run(smi, capture_output=True, text=True).stdout
        except OSError as e:
            env["nvidia_smi"] = repr(e)
    return env


def _junit(path: Path) -> list[dict]:
    if not path.exists():
        return []
    cases = []
    for case in ET.parse(path).iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = (el.get("message") or "")[:400]
        cases.append({"test": case.get("name"), "outcome": outcome, "message": message})
    return cases


def parity(device: str, streams: int, work: Path, log: Path) -> dict:
    """tests/test_gpu_parity.py against ``device``; on CUDA also the server's own CUDA
    parity test (tests/test_service_parity.py) when pytest-asyncio is importable."""
    env = {**os.environ, "VADNET_PARITY_DEVICE": device, "VADNET_PARITY_STREAMS": str(streams),
           "VADNET_PARITY_JSON": str(work / "parity.json")}  # fmt: skip
    runs = [("model", ["tests/test_gpu_parity.py", "-p", "no:asyncio"])]
    if device.startswith("cuda") and importlib.util.find_spec("pytest_asyncio"):
        runs.append(("server", ["tests/test_service_parity.py::test_cuda_matches_cpu_offline"]))
    out: dict = {"runs": {}}
    for name, args in runs:
        xml = work / f"parity-{name}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={xml}", *args]  # fmt: skip
        with log.open("a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            rc = subprocess.run(
                cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT
            ).returncode
        out["runs"][name] = {"returncode": rc, "tests": _junit(xml)}
    if len(runs) == 1 and device.startswith("cuda"):
        out["runs"]["server"] = {"returncode": None, "tests": [], "note": "pytest-asyncio missing"}
    figures = work / "parity.json"
    out["figures"] = json.loads(figures.read_text()) if figures.exists() else {}
    tests = [t for r in out["runs"].values() for t in r["tests"]]
    out["passed"] = bool(tests) and all(
        r["returncode"] == 0 for r in out["runs"].values() if r["returncode"] is not None
    )
    return out


def model(device: str, sizes: Sizes, deadline: float) -> dict:
    # Slices of the section's time, so that a slow part leaves the others theirs.
    now = time.perf_counter()
    until = [now + f * (deadline - now) for f in (0.55, 0.8, 0.9, 1.0)]
    rows = model_speed.bank_rows(device, sizes.dtypes, sizes.batch_sizes, sizes.min_s, until[0])
    offline = model_speed.offline_rows(
        device, sizes.dtypes, sizes.long_file_s, sizes.forward_batches, until[1]
    )
    if sizes.cpu_batch_sizes:  # the CPU beside the GPU, on one thread
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        rows += model_speed.bank_rows(
            "cpu", ["float32"], sizes.cpu_batch_sizes, sizes.min_s, until[2]
        )
        offline += model_speed.offline_rows("cpu", ["float32"], sizes.long_file_s, [1], until[3])
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the servers that follow want the GPU's memory
    return {
        "bank": rows,
        "offline": offline,
        "cpu_threads_for_cpu_rows": 1 if sizes.cpu_batch_sizes else torch.get_num_threads(),
    }


def server(sizes: Sizes, deadline: float, log: Path) -> dict:
    plan = sizes.plan
    out: dict = {"plan": vars(plan), "setups": []}
    for i, setup in enumerate(sizes.setups):
        share = (deadline - time.perf_counter()) / (len(sizes.setups) - i)
        if share < plan.duration_s + 20 and i > 0:  # the first setup runs however late
            out["setups"].append({"label": setup.label, "skipped": "time budget", "held": None})
            continue
        print(f"server: {setup.label}, up to {share:.0f} s", flush=True)
        res = server_ramp.run_setup(setup, plan, time.perf_counter() + share, log)
        for lv in res["levels"]:
            print(f"  streams={lv['streams']} ok={lv['ok']} p99={lv.get('p99_ms', float('nan')):.1f}ms"
                  f" server_cores={lv.get('server_cpu_cores') or 0:.2f} gpu={lv.get('gpu_util_mean_pct')}", flush=True)  # fmt: skip
        out["setups"].append(res)
    return out


# --- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (a lent GPU) or cpu (rehearsal)")
    p.add_argument("--quick", action="store_true", help="the small rehearsal sizes")
    p.add_argument("--out", required=True, help="folder for report.md and results.json")
    p.add_argument("--budget-s", type=float, default=440.0, help="wall time for all sections")
    p.add_argument("--command", default="", help="the command line, for the report")
    p.add_argument("--only", default="parity,model,server", help="sections to run (a rerun of one)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vadnet-gpu-"))  # not $OUT: 8 files come back
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.stderr.write("bench/gpu/run.py: --device cuda, but torch sees no CUDA device\n")
        return 2
    sizes = sizes_for(args.device, args.quick)
    results: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": args.command,
        "device": args.device,
        "quick": args.quick,
        "budget_s": args.budget_s,
        "environment": environment(args.device),
        "seconds": {},
    }
    print(json.dumps(results["environment"], indent=1), flush=True)

    def section(name: str, fn, *a) -> None:
        if name not in args.only.split(","):
            return
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            results[name] = fn(*a)
        except Exception as e:  # a broken section is reported; the others still run
            results[name] = {"error": repr(e)}
            print(f"{name} failed: {e!r}", flush=True)
        results["seconds"][name] = round(time.perf_counter() - start, 1)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "report.md").write_text(report.markdown(results))

    section("parity", parity, args.device, sizes.parity_streams, work, out / "pytest.log")
    # Model speed gets at most a third of what is left; the server ramp gets the rest.
    model_deadline = time.perf_counter() + (deadline - time.perf_counter()) / 3
    section("model", model, args.device, sizes, model_deadline)
    section("server", server, sizes, deadline - 5, out / "server.log")
    results["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "report.md").write_text(report.markdown(results))
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}", flush=True)
    return 0 if results.get("parity", {"passed": True}).get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
