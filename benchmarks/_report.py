"""The goals, and the Markdown rendering of one run's JSON."""

from __future__ import annotations

from typing import Any

GOALS = {
    "csr": "CSR build + sign <= 1.10 x the bare sign, and faster than cryptography's builder",
    "handshake": "first token request on a fresh connection <= 1.3 x bare handshake + request; "
    "later requests 0 handshakes",
    "warm": "warm acquire_token >= 20 x faster than azure-identity's cached get_token",
    "cold": "cold acquire_token with an existing key <= 1.5 x the sum of its steps",
    "concurrency": "longest event-loop stall under 10,000 cold callers < 20 ms",
}


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def evaluate(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per goal: target, measured figure, met (None when not measured in this run)."""
    goals: list[dict[str, Any]] = []

    def add(name: str, measured: str, met: bool | None) -> None:
        goals.append({"goal": name, "target": GOALS[name], "measured": measured, "met": met})

    for backend, data in (_get(sections, "csr", "backends") or {}).items():
        ours = _get(data, "contenders", "ours") or {}
        builder = _get(data, "contenders", "cryptography_builder")
        met = ours.get("ratio") is not None and ours["ratio"] <= 1.10
        text = f"{backend}: {ours.get('ratio')} x bare sign ({ours.get('median')} us vs " + (
            f"{_get(data, 'contenders', 'bare_sign', 'median')} us)"
        )
        if builder:
            met = met and ours["median"] < builder["median"]
            text += f"; cryptography builder {builder['ratio']} x ({builder['median']} us)"
        add("csr", text, met)
    handshake = sections.get("handshake")
    if isinstance(handshake, dict) and "tls1.3" in handshake:
        parts, met = [], True
        for label in ("tls1.3", "tls1.2"):
            fresh = _get(handshake, label, "contenders", "ours_fresh") or {}
            pooled = _get(handshake, label, "contenders", "ours_pooled") or {}
            bare = _get(handshake, label, "contenders", "bare") or {}
            ok = (fresh.get("ratio") or 99) <= 1.3 and pooled.get("server_handshakes") == 0
            met = met and ok
            parts.append(
                f"{label}: {fresh.get('ratio')} x ({fresh.get('median')} vs {bare.get('median')} ms), "
                f"pooled {pooled.get('server_handshakes')} handshakes in {pooled.get('n')} requests"
            )
        add("handshake", "; ".join(parts), met)
    warm = sections.get("warm")
    if isinstance(warm, dict) and "contenders" in warm:
        ours = warm["contenders"].get("ours_mtls_pop", {})
        msal = warm["contenders"].get("msal", {})
        base = warm["contenders"].get("azure_identity", {})
        speedup = ours.get("speedup_vs_baseline") if warm.get("baseline") == "azure_identity" else None
        text = (
            f"{speedup} x faster ({ours.get('median')} ns vs azure-identity {base.get('median')} ns); "
            f"MSAL {msal.get('median')} ns ({_ratio_text(msal, ours)})"
        )
        add("warm", text, None if speedup is None else speedup >= 20)
    cold = sections.get("cold")
    if isinstance(cold, dict) and "existing_key" in cold:
        existing, fresh = cold["existing_key"], cold["fresh_key"]
        text = (
            f"existing key {existing['ratio']} x ({existing['ours_total']['median']} vs "
            f"{existing['alone_sum']['median']} ms); fresh key {fresh['ratio']} x "
            f"({fresh['ours_total']['median']} vs {fresh['alone_sum']['median']} ms)"
        )
        add("cold", text, existing["ratio"] is not None and existing["ratio"] <= 1.5)
    rows = _get(sections, "concurrency", "rows")
    if rows:
        row = max(rows, key=lambda r: r["callers"])
        text = (
            f"{row['callers']} callers: {row['longest_stall_ms']} ms "
            f"({row['longest_stall_gc_share_ms']} ms of it in the garbage collector; "
            f"longest stall outside GC {row['longest_stall_without_gc_ms']} ms, "
            f"of which the loop thread was busy at most {row['longest_loop_busy_without_gc_ms']} ms); "
            f"network {row['network_calls']}"
        )
        met = row["longest_stall_ms"] < 20 if row["callers"] >= 10000 else None
        add("concurrency", text, met)
    return goals


def _ratio_text(other: dict[str, Any], ours: dict[str, Any]) -> str:
    if not other.get("median") or not ours.get("median"):
        return "n/a"
    return f"ours {other['median'] / ours['median']:.1f} x faster"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The run as Markdown: environment, goals, then one table per section."""
    env = result["environment"]
    libraries = ", ".join(f"{name} {version}" for name, version in env["libraries"].items() if version)
    lines = [
        f"# msiv2_async benchmarks ({result['target']} mode{', quick' if result['quick'] else ''})",
        "",
        f"- started {result['started']}, took {result['duration_s']} s"
        + (f"; emulator on loopback in a {result['emulator']}" if result.get("emulator") else ""),
        f"- machine: {env['machine']}, {env['cpu']} x {env['cpu_count']}, {env['platform']}, "
        f"load average {env['load_average']}",
        f"- Python {env['python']} ({env['python_implementation']}), {env['openssl']}",
        f"- libraries: {libraries}",
        "",
        "## Goals",
        "",
    ]
    lines += _table(
        ["goal", "target", "measured", "met"],
        [
            [g["goal"], g["target"], g["measured"], {True: "yes", False: "**no**", None: "n/a"}[g["met"]]]
            for g in result["goals"]
        ],
    )
    sections = result["sections"]
    for name, data in sections.items():
        if isinstance(data, dict) and "error" in data:
            lines += ["", f"## {name}: failed", "", f"`{data['error']}`"]
    csr = _get(sections, "csr", "backends")
    if csr:
        lines += ["", "## 1. CSR signing (microseconds per CSR)", ""]
        rows = [
            [backend, name, s["median"], s["p10"], s["p90"], s["ratio"]]
            for backend, data in csr.items()
            for name, s in data["contenders"].items()
        ]
        lines += _table(["backend", "contender", "median", "p10", "p90", "ratio to bare sign"], rows)
    handshake = sections.get("handshake")
    if isinstance(handshake, dict) and "tls1.3" in handshake:
        lines += ["", "## 2. mTLS token request on a fresh vs pooled connection (ms)", ""]
        rows = [
            [
                f"{label} ({', '.join(handshake[label]['negotiated'])})",
                name,
                s["median"],
                s["p10"],
                s["p90"],
                s["ratio"],
                s["server_handshakes"],
                s["n"],
            ]
            for label in ("tls1.3", "tls1.2")
            for name, s in handshake[label]["contenders"].items()
        ]
        lines += _table(
            ["TLS", "contender", "median", "p10", "p90", "ratio to bare", "STS handshakes", "requests"], rows
        )
    warm = sections.get("warm")
    if isinstance(warm, dict) and "contenders" in warm:
        lines += ["", "## 3. Warm acquire_token / get_token cache hit (ns per call)", ""]
        rows = [
            [
                name,
                s["median"],
                s["p10"],
                s["p90"],
                s["calls_per_second"],
                s["ratio"],
                s["speedup_vs_baseline"],
            ]
            for name, s in warm["contenders"].items()
        ]
        lines += _table(
            ["contender", "median ns", "p10", "p90", "calls/s", "ratio", f"speed-up vs {warm['baseline']}"],
            rows,
        )
        if warm.get("missing"):
            lines += ["", f"Not measured: {warm['missing']}"]
    cold = sections.get("cold")
    if isinstance(cold, dict) and "existing_key" in cold:
        lines += ["", "## 4. Cold acquire_token vs the sum of its steps alone (ms, medians)", ""]
        rows = [
            [mode, cold[mode]["ours_total"]["median"], cold[mode]["alone_sum"]["median"], cold[mode]["ratio"]]
            for mode in ("existing_key", "fresh_key")
        ]
        lines += _table(["key", "ours (one acquire_token)", "steps alone (sum)", "ratio"], rows)
        steps: list[str] = []
        for mode in ("existing_key", "fresh_key"):
            for name in [*cold[mode]["ours_steps"], *cold[mode]["alone_steps"]]:
                if name not in steps:
                    steps.append(name)
        rows = [
            [
                step,
                *(
                    _get(cold, mode, side, step, "median")
                    for mode in ("existing_key", "fresh_key")
                    for side in ("ours_steps", "alone_steps")
                ),
            ]
            for step in steps
        ]
        lines += [""]
        lines += _table(["step", "existing: ours", "existing: alone", "fresh: ours", "fresh: alone"], rows)
        lines += ["", cold["note"]]
    concurrency = sections.get("concurrency")
    if isinstance(concurrency, dict) and "rows" in concurrency:
        lines += [
            "",
            "## 5. Concurrent cold callers "
            f"(one client, fresh key; arrival in waves of {concurrency['wave']})",
            "",
        ]
        rows = [
            [
                r["callers"],
                r["cold_callers"],
                "/".join(
                    str(r["network_calls"][k]) for k in ("getplatformmetadata", "issuecredential", "token")
                ),
                r["p50_ms"],
                r["p99_ms"],
                r["longest_stall_ms"],
                r["longest_stall_without_gc_ms"],
                r["longest_loop_busy_without_gc_ms"],
                r["longest_gc_pause_ms"],
                r["arrival_ms"],
            ]
            for r in concurrency["rows"]
        ]
        lines += _table(
            [
                "callers",
                "cold",
                "metadata/issuecredential/token",
                "p50 ms",
                "p99 ms",
                "longest stall ms",
                "stall outside GC ms",
                "loop busy outside GC ms",
                "longest GC pause ms",
                "arrival ms",
            ],
            rows,
        )
        lines += ["", f"Latency is measured from {concurrency['latency_from']}."]
    return "\n".join(lines) + "\n"
