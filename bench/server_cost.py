"""Where a streamed chunk's server CPU goes: `vadnet serve` beside a bare gRPC floor.

    python bench/server_cost.py --streams 250 --duration-s 20

Runs the same `vadnet loadtest` (real-time streams of real speech, probabilities on, so
one request and one response per chunk) twice, one after the other, with the server
pinned to ``--server-cpus`` and the load generator to ``--client-cpus``:

1. ``floor``: a bare grpc.aio ``VoiceActivity`` servicer on the same event loop as
   vadnet's (uvloop when installed) that reads each audio message and answers at once
   with a response of the same shape (six probabilities): what the transport alone costs.
2. ``vadnet``: ``vadnet serve`` with the bundled model on the CPU.

It reports server CPU per answered chunk for both, their ratio, and vadnet's CPU split
by thread (event loop, model thread, gRPC's own threads), read from /proc over the
middle of the run. The machine is shared, so compare the two rows of one run.
``--serve-floor PORT`` runs only the floor server (used by the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vadnet.service.cmd_loadtest import spawn_pinned

VADNET_SERVE = ["serve", "--port", "0", "--metrics-port", "-1", "--device", "cpu"]


# --- the floor server ----------------------------------------------------------------
def serve_floor(port: int) -> None:
    import asyncio

    import grpc

    from vadnet.service.cmd_serve import loop_factory
    from vadnet.v1 import vad_pb2 as pb
    from vadnet.v1 import vad_pb2_grpc as pb_grpc

    class Floor(pb_grpc.VoiceActivityServicer):
        async def StreamingDetect(self, request_iterator, context):  # noqa: N802
            await context.read()  # the config
            samples, frame = 0, 0
            while (msg := await context.read()) is not grpc.aio.EOF:
                samples += len(msg.audio) // 2
                resp = pb.StreamingDetectResponse(input_samples_processed=samples)
                resp.probabilities.first_frame = frame
                resp.probabilities.values.extend([0.0] * 6)
                frame += 6
                await context.write(resp)
            resp = pb.StreamingDetectResponse(input_samples_processed=samples, is_final=True)
            resp.summary.input_samples = samples
            resp.summary.audio_s = samples / 16000
            await context.write(resp)

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_VoiceActivityServicer_to_server(Floor(), server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        sys.stdout.write(f"floor serving on 127.0.0.1:{bound}\n")
        sys.stdout.flush()
        try:
            await server.wait_for_termination()
        finally:
            await server.stop(0)

    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        runner.run(main())


# --- measuring -------------------------------------------------------------------------
def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (OS thread name, CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_kind(pid: int, tid: int, name: str) -> str:
    if tid == pid:
        return "event loop"
    if name == "vadnet-model":
        return "model"
    return "grpc and other"


def measure(name: str, cmd: list[str], args: argparse.Namespace) -> dict:
    proc, port = spawn_pinned(cmd, args.server_cpus)
    try:
        load = subprocess.Popen(
            [sys.executable, "-m", "vadnet.service.cli", "loadtest", "--server",
             f"127.0.0.1:{port}", "--streams", str(args.streams), "--chunk-ms",
             str(args.chunk_ms), "--duration-s", str(args.duration_s), "--server-pid",
             str(proc.pid), "--client-cpus", args.client_cpus, "--json"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        # The split is read over the middle of the run, away from stream set-up and end.
        time.sleep(args.duration_s * 0.25)
        before, t0 = thread_cpu(proc.pid), time.perf_counter()
        time.sleep(args.duration_s * 0.5)
        after, wall = thread_cpu(proc.pid), time.perf_counter() - t0
        out, _ = load.communicate()
        if load.returncode:
            raise SystemExit(f"loadtest against {name} failed")
        level = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    finally:
        proc.terminate()
        proc.wait(30)
    split: dict[str, float] = {}
    for tid, (tname, cpu) in after.items():
        kind = thread_kind(proc.pid, tid, tname)
        split[kind] = split.get(kind, 0.0) + (cpu - before.get(tid, (tname, 0.0))[1]) / wall
    return {"name": name, "level": level, "cores_by_thread": split}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=250)
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("--duration-s", type=float, default=20.0)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--out", default="bench/results/server_cost.json")
    p.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_floor is not None:
        serve_floor(args.serve_floor)
        return 0

    runs = [
        measure("floor", [sys.executable, __file__, "--serve-floor", "0"], args),
        measure("vadnet", [sys.executable, "-m", "vadnet.service.cli", *VADNET_SERVE], args),
    ]
    lines = [
        f"{args.streams} streams x {args.chunk_ms:g} ms chunks, server on CPU {args.server_cpus},"
        f" load on CPU {args.client_cpus}:",
        "",
        "| server | server CPU (cores) | µs per chunk | p50 ms | p99 ms | lost | event loop | model thread | gRPC + other threads |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lv, sp = r["level"], r["cores_by_thread"]
        lines.append(
            f"| {r['name']} | {lv['server_cpu_cores']:.2f} | {lv['server_us_per_chunk']:.0f}"
            f" | {lv['p50_ms']:.1f} | {lv['p99_ms']:.1f} | {lv['lost_samples']}"
            f" | {sp.get('event loop', 0):.2f} | {sp.get('model', 0):.2f}"
            f" | {sp.get('grpc and other', 0):.2f} |"
        )
    floor, ours = (r["level"]["server_us_per_chunk"] for r in runs)
    lines += ["", f"vadnet / floor, CPU per chunk: {ours / floor:.2f}"]
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"args": vars(args), "runs": runs, "table": text}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
