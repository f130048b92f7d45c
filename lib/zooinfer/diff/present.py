"""A diff's verdict (thresholds -> PASS / FAIL and the exit status), its text report and its HTML page."""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from .runs import DiffInputError

#: exit statuses of ``zooinfer diff``
EXIT_WITHIN, EXIT_PAST, EXIT_BAD_INPUT = 0, 1, 2
#: a headline metric may fall this much below the threshold (percentage points) before it counts: float noise
DROP_NOISE_PTS = 1e-9
#: changed samples the text report lists, and the HTML page draws
LISTED, DRAWN = 20, 12


def threshold_value(option: str, text: Any, *, fraction: bool = False) -> float | None:
    """A threshold from the command line: None when not given; a finite number >= 0 (``fraction``: also < 1), else
    :class:`DiffInputError` naming the option and the value."""
    if text is None:
        return None
    what = "a fraction >= 0 and < 1 (0.1: 10% slower)" if fraction else "a number of percentage points >= 0"
    try:
        if isinstance(text, bool):
            raise ValueError
        value = float(text)
    except (TypeError, ValueError):
        raise DiffInputError(f"{option} must be {what}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (fraction and value >= 1):
        raise DiffInputError(f"{option} must be {what}, got {text!r}")
    return value


def judge(metrics: list[dict], speed: dict, *, max_drop: float | None, max_slowdown: float | None,
          spread: dict[str, float] | None = None) -> dict:
    """The verdict: each headline metric's drop (A - B, percentage points) against ``max_drop``, each throughput
    ratio of the runs' own backends (the pure-inference sweep; the end-to-end rate where neither swept) against
    ``max_slowdown`` (fraction: 0.1 = B may be 10% slower). {"status": PASS / FAIL / "no thresholds", "line",
    "failures", "checks", "exit"}. ``spread``: {metric: the spread (max - min, a fraction) the runs' repeats
    measured} (``zooinfer.repeat``): a drop past ``max_drop`` but within it is non-determinism, not a regression
    (said in ``checks`` and ``within_spread``)."""
    failures, checks, within_spread = [], [], []
    spread = spread or {}
    if max_drop is not None:
        drops = [(r["metric"], -100.0 * r["delta"]) for r in metrics if r["headline"] and r["delta"] is not None]
        for name, drop in drops:
            noise = 100.0 * spread.get(name, 0.0)
            if drop > max_drop + DROP_NOISE_PTS and drop <= noise + DROP_NOISE_PTS:
                within_spread.append(f"{name} dropped {drop:.3f} pts, within the {noise:.3f} pts its repeats "
                                     "spread over (measured non-determinism): not a regression")
            elif drop > max_drop + DROP_NOISE_PTS:
                failures.append(f"{name} dropped {drop:.3f} pts (more than {max_drop:g} allowed"
                                + (f"; beyond the measured spread {noise:.3f} pts)" if noise else ")"))
        if drops:
            name, drop = max(drops, key=lambda d: d[1])
            checks.append(f"largest headline drop {max(drop, 0.0) + 0.0:.3f} pts ({name}), allowed {max_drop:g}")
        else:
            checks.append("no headline metric defined in both runs: --max-drop not checked")
    if max_slowdown is not None:
        rows = [r for r in speed.get("throughput", []) if r["own"] and r["ratio"] is not None]
        source = "pure-inference sweep"
        if not rows and speed.get("end_to_end"):
            rows, source = [{**speed["end_to_end"], "bs": "end-to-end"}], "end-to-end rate"
        for r in rows:
            slowdown = 1.0 - r["ratio"]
            if slowdown > max_slowdown + 1e-12:
                failures.append(f"bs {r['bs']}: B runs at {r['ratio']:.3f}x A's throughput ({100 * slowdown:.1f}% "
                                f"slower, {100 * max_slowdown:g}% allowed; {source})")
        if rows:
            worst = min(rows, key=lambda r: r["ratio"])
            checks.append(f"slowest ratio {worst['ratio']:.3f}x at bs {worst['bs']} ({source}), allowed "
                          f"{1 - max_slowdown:.3f}x")
        else:
            checks.append("neither run has throughput figures of its backend: --max-slowdown not checked")
    if max_drop is None and max_slowdown is None:
        status, exit_code = "no thresholds", EXIT_WITHIN
        line = "diff: no thresholds given (--max-drop, --max-slowdown): exit 0"
    elif failures:
        status, exit_code = "FAIL", EXIT_PAST
        line = "diff FAIL: " + "; ".join(failures)
    else:
        status, exit_code = "PASS", EXIT_WITHIN
        line = "diff PASS: within the thresholds (" + "; ".join(checks) + ")"
    checks += within_spread
    if within_spread and exit_code == EXIT_WITHIN and max_drop is not None:
        line += "; " + "; ".join(within_spread)
    return {"status": status, "line": line, "failures": failures, "checks": checks, "exit": exit_code,
            "max_drop_pts": max_drop, "max_slowdown": max_slowdown, "within_spread": within_spread,
            "measured_spread_pts": {k: 100.0 * v for k, v in spread.items()} or None}


# ------------------------------------------------------------------------------------------------ text
def _pct(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def _interval(ci: Any) -> str:
    return "-" if ci is None else f"[{100 * ci[0]:+.3f}, {100 * ci[1]:+.3f}]"


def metric_table(rows: list[dict]) -> list[dict]:
    """The metric rows in percent for a table."""
    spread = any(r.get("measured_spread") is not None for r in rows)  # a repeat measured the non-determinism
    return [{"metric": r["metric"] + (" *" if r["headline"] else ""), "A_%": _pct(r["a"]), "B_%": _pct(r["b"]),
             "change_pts": "-" if r["delta"] is None else f"{100 * r['delta']:+.3f}",
             "paired_95%_pts": _interval(r["interval"]),
             **({"repeats_spread_pts": _pct(r.get("measured_spread"))} if spread else {})} for r in rows]


def per_class_table(rows: list[dict], figures: list[str], n: int = LISTED) -> list[dict]:
    """The first ``n`` per-class delta rows in percent."""
    out = []
    for r in rows[:n]:
        row = {"name": r["name"]}
        for f in figures:
            row[f"{f}_A_%"] = _pct(r.get(f"{f}_a"), 2)
            row[f"{f}_B_%"] = _pct(r.get(f"{f}_b"), 2)
            d = r.get(f"delta_{f}")
            row[f"delta_{f}_pts"] = "-" if d is None else f"{100 * d:+.2f}"
        row["n"] = r.get("n")
        out.append(row)
    return out


#: the columns of a changed sample the tables show, by task
CHANGED_COLUMNS = {
    "classification": ["key", "label", "top1_a", "top1_b", "effect", "label_rank_a", "label_rank_b"],
    "detection": ["key", "matched", "lost", "new", "largest_score_change", "severity"],
    "face_detection": ["key", "matched", "lost", "new", "largest_score_change", "severity"],
    "reid": ["key", "rank1_a", "rank1_b", "effect"],
}


def changed_table(task: str, rows: list[dict], n: int = LISTED) -> list[dict]:
    cols = CHANGED_COLUMNS.get(task, ["key"])
    return [{c: (round(r[c], 4) if isinstance(r.get(c), float) else r.get(c)) for c in cols} for r in rows[:n]]


def speed_tables(speed: dict) -> tuple[list[dict], list[dict]]:
    thr = [{"backend": r["backend"], "bs": r["bs"], "A_per_s": _round(r["a_per_s"]), "B_per_s": _round(r["b_per_s"]),
            "B/A": _round(r["ratio"], 3), "unstable": r["unstable"] or ""} for r in speed.get("throughput", [])]
    if speed.get("end_to_end"):
        e = speed["end_to_end"]
        thr.append({"backend": "end-to-end", "bs": "", "A_per_s": _round(e["a_per_s"]), "B_per_s": _round(e["b_per_s"]),
                    "B/A": _round(e["ratio"], 3), "unstable": ""})
    stages = [{"stage": r["stage"], "A_ms_per_item": _round(r["a_ms"]), "B_ms_per_item": _round(r["b_ms"]),
               "B/A_time": _round(r["time_ratio"], 3)} for r in speed.get("stages", [])]
    return thr, stages


def _round(v: Any, digits: int = 2) -> Any:
    return round(v, digits) if isinstance(v, float) else v


def _short(v: Any, width: int = 60) -> str:
    text = str(v)
    return text if len(text) <= width else text[:width - 3] + "..."


def sections(d: Any) -> list[tuple[str, str, list[dict]]]:
    """(title, sentence, rows) of each part of the report, shared by the text and the HTML."""
    out = [("Metrics", f"Change B - A in percentage points with its paired bootstrap 95% interval ({d.resamples} "
                       f"resamples of the {d.units} {d.unit_name} both runs hold, the same draws for both); "
                       "* = headline metric.", metric_table(d.metrics))]
    if d.per_class_by:
        figs = d.per_class_figures
        moved = [r for r in d.per_class if any(r.get(f"delta_{f}") for f in figs)]
        out.append((f"Per {d.per_class_by}: changes, largest first",
                    f"{len(moved)} of {len(d.per_class)} {d.per_class_by} rows changed; the first "
                    f"{min(LISTED, len(moved))} shown (percent).", per_class_table(moved, figs)))
    what = {"classification": "top-1 changed", "detection": "a detection lost, new or rescored (IoU 0.5)",
            "face_detection": "a face detection lost, new or rescored (IoU 0.5)", "reid": "rank-1 changed"}
    out.append(("Changed samples, worst first",
                f"{len(d.changed)} of {d.samples} samples changed ({what.get(d.task, 'changed')}); the first "
                f"{min(LISTED, len(d.changed))} listed.", changed_table(d.task, d.changed)))
    thr, stages = speed_tables(d.speed)
    out.append(("Speed", "Throughput B / A per batch size (> 1: B faster), from each run's metrics.json.", thr))
    out.append(("Stage times", "Time per item B / A per pipeline stage (> 1: B slower).", stages))
    diffs = [{"part": r["part"], "field": r["field"], "A": _short(r["a"]), "B": _short(r["b"])}
             for r in d.differences]
    out.append(("What differs", "Parameters, checkpoint, backend session and environment manifest fields whose "
                                "values differ.", diffs))
    return out


def text_report(d: Any) -> str:
    """The report ``zooinfer diff`` prints (markdown)."""
    from ..report import markdown_table

    lines = [f"# zooinfer diff: {d.model}", "", f"RUN_A: `{d.a.given}`", f"RUN_B: `{d.b.given}`", "",
             d.samples_sentence(), ""]
    for title, sentence, rows in sections(d):
        lines += [f"## {title}", "", sentence, "", markdown_table(rows) if rows else "_(none)_", ""]
    lines += [f"**{d.verdict['line']}**", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ html
def _table_html(rows: list[dict]) -> str:
    if not rows:
        return "<p><em>(none)</em></p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _image(path: Any) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def picture(task: str, row: dict) -> str | None:
    """A base64 PNG of one changed sample (None when its image cannot be read): the image with both top-1 classes;
    the detections lost (red), new in B (blue) and matched (green, A's box); the query with both rank-1 images."""
    from matplotlib import patches
    from matplotlib.figure import Figure  # not pyplot: no backend switched, nothing left open in a notebook

    try:
        if task == "reid":
            paths = [row.get("path"), row.get("rank1_a_path"), row.get("rank1_b_path")]
            fig = Figure(figsize=(4.5, 2.6))
            axes = fig.subplots(1, 3)
            titles = ["query", f"A rank-1 ({'right' if row['right_a'] else 'wrong'})",
                      f"B rank-1 ({'right' if row['right_b'] else 'wrong'})"]
            for ax, p, t in zip(axes, paths, titles):
                if p:
                    ax.imshow(_image(p))
                ax.set_title(t, fontsize=7)
                ax.axis("off")
            return _png(fig)
        fig = Figure(figsize=(4, 3.2))
        ax = fig.subplots()
        ax.imshow(_image(row["path"]))
        ax.axis("off")
        if task == "classification":
            ax.set_title(f"{row['key']}: label {row['label']}\nA top-1 {row['top1_a']}, B top-1 {row['top1_b']} "
                         f"({row['effect']})", fontsize=7)
        else:
            for kind, color, style in (("matched_a", "lime", "-"), ("lost", "red", "-"), ("new", "deepskyblue", "--")):
                for x, y, w, h, s, _c in row["boxes"][kind]:
                    ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, color=color, linestyle=style, lw=1))
            ax.set_title(f"{row['key']}: {row['lost']} lost (red), {row['new']} new (blue), {row['matched']} "
                         "matched (green)", fontsize=7)
        return _png(fig)
    except (OSError, ValueError, KeyError, TypeError):  # an image that is not here (another machine's run)
        return None


def html_report(d: Any) -> str:
    """The diff as one self-contained HTML page (tables, and pictures of the worst changed samples)."""
    parts = [f"<h1>zooinfer diff: {html.escape(d.model)}</h1>",
             f"<p>RUN_A: <code>{html.escape(str(d.a.given))}</code><br>RUN_B: "
             f"<code>{html.escape(str(d.b.given))}</code></p>", f"<p>{html.escape(d.samples_sentence())}</p>",
             f"<p class='verdict {d.verdict['status'].replace(' ', '-')}'><b>{html.escape(d.verdict['line'])}</b></p>"]
    for title, sentence, rows in sections(d):
        parts += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(sentence)}</p>", _table_html(rows)]
        if title.startswith("Changed samples") and d.changed:
            figs = []
            for row in d.changed[:DRAWN]:
                png = picture(d.task, row)
                figs.append(f"<figure><img src='data:image/png;base64,{png}'><figcaption>{html.escape(row['key'])}"
                            "</figcaption></figure>" if png else
                            f"<figure><figcaption>{html.escape(row['key'])}: image not readable here"
                            "</figcaption></figure>")
            parts.append("<div class='pictures'>" + "".join(figs) + "</div>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em} table{border-collapse:collapse;font-size:90%} "
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#eee} "
             ".pictures{display:flex;flex-wrap:wrap;gap:8px} figure{margin:0} figcaption{font-size:80%} "
             ".FAIL{color:#b00} .PASS{color:#070}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>zooinfer diff {html.escape(d.model)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def check_html_path(path: str | Path) -> Path:
    """``--html`` checked before anything is read: a file (not a folder) in a folder that exists."""
    path = Path(path)
    if path.is_dir():
        raise DiffInputError(f"--html {path}: a folder; expected the HTML file to write (e.g. {path / 'diff.html'})")
    if not path.absolute().parent.is_dir():
        raise DiffInputError(f"--html {path}: its folder {path.absolute().parent} does not exist")
    return path


def write_html(d: Any, path: str | Path) -> Path:
    """Write :func:`html_report` to ``path`` (whole or not at all; a clear error naming it when it cannot be)."""
    from ..report import artefact

    path = check_html_path(path)
    with artefact(path) as f:
        f.write(html_report(d))
    return path
