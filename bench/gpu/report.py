"""results.json -> report.md: the GPU check's figures as tables, with the command."""

from __future__ import annotations


def _f(value: object, fmt: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return format(value, fmt)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    width = len(header)  # short rows (a skipped setup) get empty cells
    return lines + ["| " + " | ".join([*r, *[""] * (width - len(r))]) + " |" for r in rows]


def _head(r: dict) -> list[str]:
    env = r.get("environment", {})
    v = env.get("versions", {})
    gpu = env.get("gpu")
    lines = ["# GPU batch inference check (`bench/gpu/run.sh`)", ""]
    if not r.get("device", "").startswith("cuda"):
        lines += ["**No GPU in this run: every figure below is the CPU's (a rehearsal of the "
                  "script, not a GPU measurement).**", ""]  # fmt: skip
    lines += [
        f"- command: `{r.get('command') or 'bench/gpu/run.sh'}`",
        f"- date: {r.get('date')}; device: {gpu or r.get('device')}"
        + (f" ({env.get('gpu_memory_gib')} GiB)" if gpu else "")
        + f"; {env.get('cpus')} CPUs; quick: {r.get('quick')}",
        f"- python {env.get('python')}, torch {v.get('torch')} (CUDA {env.get('torch_cuda')}),"
        f" numpy {v.get('numpy')}, grpcio {v.get('grpcio')}, protobuf {v.get('protobuf')},"
        f" vadnet from `{env.get('vadnet_from')}`",
        "- seconds per section: " + ", ".join(f"{k} {v}" for k, v in r.get("seconds", {}).items()),
        "",
    ]
    return lines


def _parity(p: dict) -> list[str]:
    lines = ["## Parity (tests/test_gpu_parity.py, marker `cuda`)", ""]
    if "error" in p:
        return lines + [f"Section failed: `{p['error']}`", ""]
    tests = [t for run in p.get("runs", {}).values() for t in run.get("tests", [])]
    counts = {
        k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")
    }
    lines.append(
        f"**{'PASSED' if p.get('passed') else 'FAILED'}**: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    for name, run in p.get("runs", {}).items():
        if run.get("note"):
            lines.append(f"- {name} run: {run['note']}")
    lines.append("")
    fig = p.get("figures", {})
    rows = []
    for key, f in fig.items():
        if not isinstance(f, dict):
            continue
        if key == "stream_bank":
            detail = (f"{f['streams']} streams, {f['audio_s']} s of audio, {f['advance_calls']} advance calls,"
                      f" mean batch {f['mean_batch']}; vs offline {f['max_abs_diff_vs_offline']:.2e}")  # fmt: skip
            rows.append([key, f["compared_with"], f"{f['max_abs_diff_vs_cpu_bank']:.2e}",
                         str(f["boundaries_moved"]), detail])  # fmt: skip
        else:
            moved = f.get("boundaries_moved_total")
            if moved is None:
                moved = sum(sum(m.values()) for m in f.get("boundaries_moved", {}).values())
            files = f.get("files", [])
            strict = f.get("max_abs_diff_tf32_off")
            tf32 = "" if strict is None else f"; with cuDNN's TF32 off {strict:.2e}"
            rows.append([key, f["compared_with"], f"{f['max_abs_diff']:.2e}", str(moved),
                         f"{len(files)} files (test files + a 60 s mixture), default and rich segmenter options{tf32}"])  # fmt: skip
    lines += _table(["check", "against", "max abs diff", "boundaries moved", "what"], rows)
    failed = [t for t in tests if t["outcome"] in ("failed", "error")]
    skipped = [t for t in tests if t["outcome"] == "skipped"]
    lines += [""] + [f"- failed: `{t['test']}`: {t['message']}" for t in failed]
    lines += [f"- skipped: `{t['test']}`: {t['message']}" for t in skipped]
    return lines + [""]


def _model(m: dict) -> list[str]:
    lines = ["## Model throughput: one StreamBank, 100 ms chunks per stream per call", ""]
    if "error" in m:
        return lines + [f"Section failed: `{m['error']}`", ""]
    lines += ["`advance` is the whole call the server's batcher makes (host staging, transfer,"
              " step, copy back); `step` is the traced step alone on staged device tensors."
              " CPU rows beside a GPU run on one thread.", ""]  # fmt: skip
    rows = []
    for r in m.get("bank", []):
        if r.get("skipped"):
            rows.append([r["device"], r["dtype"], str(r["streams"]), "skipped: " + r["skipped"]])
            continue
        rows.append([
            r["device"], r["dtype"], str(r["streams"]), _f(r["us_per_chunk"]),
            _f(r["step_us_per_chunk"], ".2f"), _f(r["ms_per_call"], ".2f"),
            _f(r["state_bytes_per_stream"] / 1024), _f(r.get("gpu_peak_bytes_per_stream", None) and r["gpu_peak_bytes_per_stream"] / 1024),
        ])  # fmt: skip
    lines += _table(["device", "dtype", "streams", "µs/chunk advance", "µs/chunk step",
                     "ms/call", "state KB/stream", "GPU peak KB/stream"], rows)  # fmt: skip
    lines += ["", "### Offline: x real time", ""]
    rows = [[r["path"], r["device"], r["dtype"], str(r["files"]), _f(r["audio_s"], ".0f"),
             _f(r["x_realtime"], ",.0f")] for r in m.get("offline", [])]  # fmt: skip
    lines += _table(["path", "device", "dtype", "files", "audio s", "x real time"], rows)
    return lines + [""]


def _limit(label: str, b: dict, n_server: int, n_client: int) -> str:
    """One line on the first failing level: each resource's use, and the busiest."""
    use = {
        "server CPU": (b.get("server_cpu_cores") or 0) / n_server,
        "load generator CPU": (b.get("client_cpu_cores") or 0) / n_client,
    }
    if b.get("gpu_util_mean_pct") is not None:
        use["GPU"] = b["gpu_util_mean_pct"] / 100
    busiest = max(use, key=use.get)
    return (
        f"- {label}, first failing level {b['streams']} streams: p99 {_f(b.get('p99_ms'))} ms,"
        f" lost {b.get('lost_samples')}, failed streams {b.get('failed_streams')};"
        f" server {_f(b.get('server_cpu_cores'), '.2f')} of {n_server} cores busy, load"
        f" generator {_f(b.get('client_cpu_cores'), '.2f')} of {n_client} (start-up"
        f" included), GPU {_f(b.get('gpu_util_mean_pct'), '.0f')} % (nvidia-smi)."
        f" Busiest: {busiest} at {use[busiest]:.0%}"
        + ("." if use[busiest] >= 0.8 else " (nothing near saturation: look elsewhere).")
    )


def _server(s: dict) -> list[str]:
    lines = ["## The server under load (`vadnet serve` + `vadnet loadtest`)", ""]
    if "error" in s:
        return lines + [f"Section failed: `{s['error']}`", ""]
    p = s.get("plan", {})
    lines += [
        f"Server on CPUs {p.get('server_cpus')}, load generator on CPUs {p.get('client_cpus')}"
        f" ({p.get('client_procs')} processes); {p.get('chunk_ms')} ms chunks of real speech at"
        f" real-time pace, {p.get('duration_s')} s per level; a level passes at p99 added latency"
        f" <= {p.get('p99_ms')} ms with no audio lost and no stream failed. Levels double, then"
        " halve the gap.",
        "",
    ]
    n_server = len(str(p.get("server_cpus", "")).split(","))
    n_client = len(str(p.get("client_cpus", "")).split(","))
    rows, notes = [], []
    for res in s.get("setups", []):
        if res.get("skipped") or res.get("error"):
            rows.append([res["label"], "-", "-", res.get("skipped") or res.get("error")])
            continue
        levels = res["levels"]
        held = [lv for lv in levels if lv.get("ok") and lv["streams"] == res["held"]]
        h = held[0] if held else {}
        workers = res["setup"]["workers"]
        rows.append([
            res["label"], str(res["held"]), _f(res["held"] / workers, ".0f"),
            str(res.get("first_failed") or "-"), _f(h.get("p99_ms")),
            _f(h.get("server_cpu_cores"), ".2f"), _f(h.get("server_us_per_chunk"), ".0f"),
            _f(h.get("client_cpu_cores"), ".2f"), _f(h.get("gpu_util_mean_pct"), ".0f"),
            _f(h.get("mean_batch")),
        ])  # fmt: skip
        bad = [lv for lv in levels if not lv.get("ok") and "error" not in lv]
        if bad:
            notes.append(
                _limit(res["label"], min(bad, key=lambda lv: lv["streams"]), n_server, n_client)
            )
    lines += _table(["setup", "streams held", "per process", "first failed", "p99 ms",
                     "server cores", "server µs/chunk", "client cores", "GPU util %",
                     "mean batch"], rows)  # fmt: skip
    lines += ["", "At the held level. Where the limit was:", "", *notes, ""]
    held = [r for r in s.get("setups", []) if r.get("held")]
    cuda = [r for r in held if r["setup"]["device"].startswith("cuda")]
    cpu = [r for r in held if r["setup"]["device"] == "cpu"]
    if len(cuda) > 1:
        by = sorted(cuda, key=lambda r: r["setup"]["workers"])
        lines += ["Scaling with server processes per GPU: " + ", ".join(
            f"{r['setup']['workers']} -> {r['held']} streams" for r in by) + ".", ""]  # fmt: skip
    if cuda and cpu:
        best, base = max(cuda, key=lambda r: r["held"]), max(cpu, key=lambda r: r["held"])
        lines += [f"Streams per GPU (best setup, {best['label']}): **{best['held']}**; the CPU"
                  f" baseline on the same server cores ({base['label']}): {base['held']};"
                  f" ratio {best['held'] / base['held']:.2f}.", ""]  # fmt: skip
    lines += ["### Every level", ""]
    rows = []
    for res in s.get("setups", []):
        for lv in res.get("levels", []):
            rows.append([
                res["label"], str(lv["streams"]), "yes" if lv.get("ok") else "no",
                _f(lv.get("p50_ms")), _f(lv.get("p99_ms")), str(lv.get("lost_samples", "-")),
                str(lv.get("failed_streams", "-")), _f(lv.get("server_cpu_cores"), ".2f"),
                _f(lv.get("server_us_per_chunk"), ".0f"), _f(lv.get("client_cpu_cores"), ".2f"),
                _f(lv.get("gpu_util_mean_pct"), ".0f"), _f(lv.get("gpu_mem_max_mb"), ".0f"),
                _f(lv.get("mean_batch")), _f(lv.get("batch_p99_le"), ".0f"),
                _f(lv.get("mean_pass_ms"), ".2f"), _f(lv.get("server_rss_mb"), ".0f"),
            ])  # fmt: skip
    lines += _table(["setup", "streams", "pass", "p50 ms", "p99 ms", "lost", "failed",
                     "server cores", "server µs/chunk", "client cores", "GPU %", "GPU MB",
                     "mean batch", "batch p99 <=", "pass ms", "server RSS MB"], rows)  # fmt: skip
    return lines + [""]


def markdown(results: dict) -> str:
    lines = _head(results)
    if "parity" in results:
        lines += _parity(results["parity"])
    if "model" in results:
        lines += _model(results["model"])
    if "server" in results:
        lines += _server(results["server"])
    return "\n".join(lines)
