"""``zooinfer``: a thin command line over the notebooks (papermill) and a few library helpers.

    zooinfer list                                   models and their recipes
    zooinfer run dpn131 -p bs 8                     render notebooks/dpn131.ipynb into outputs/dpn131/<run-id>/:
                                                    the executed notebook, its HTML, <model>-report.html (no code)
    zooinfer run dpn131 -f params/dpn131.yaml -p weights /data/dpn131-7af84be88.pth -p data_root /data/imagenet
    zooinfer export dpn131 --weights FILE --out dpn131.onnx [--bs 8]
    zooinfer bins dpn131 --data-root /data/imagenet --out ./prep_bin    .bin + .info inputs for ais_bench / benchmark
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from .errors import ZooinferError


def _checkout() -> Path:
    return Path(__file__).resolve().parents[2]


def _notebook(model: str) -> Path:
    nb = _checkout() / "notebooks" / f"{model}.ipynb"
    if not nb.is_file():
        raise ZooinferError(f"no notebook for {model!r} at {nb} (run from a checkout of zooinfer)")
    return nb


def _parse_value(text: str):
    """papermill -p semantics: YAML scalars (8 -> int, null -> None, [1, 8] -> list), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def cmd_list(_args: argparse.Namespace) -> int:
    from . import recipes

    for name in recipes.NAMES:
        try:
            r = recipes.get(name)
            ref = ", ".join(f"{k} {100 * v:.2f}" for k, v in r.published.accuracy.items())
            print(f"{name:14s} {r.task:15s} input {r.input_shape}  published {ref}  checkpoint {r.checkpoint_file}")
        except ZooinferError as e:
            print(f"{name:14s} ({e})")
    return 0


#: parameters ``zooinfer run`` sets itself: the notebook writes into the run folder the CLI owns
CLI_OWNED = ("run_dir",)


def run_parameters(args: argparse.Namespace) -> dict:
    """The notebook parameters of ``zooinfer run``: the YAML files, then ``-p`` values; the progress bar off unless
    asked for (``-p progress true``): papermill shows its own cell progress, and a bar in the notebook would only
    end up in the rendered report."""
    params: dict = {}
    for f in args.file or []:
        params.update(yaml.safe_load(Path(f).read_text()) or {})
    for key, value in args.param or []:
        params[key] = _parse_value(value)
    owned = [k for k in CLI_OWNED if k in params]
    if owned:
        raise ZooinferError(f"parameter {owned[0]!r} is set by zooinfer run (the run folder it renders into); "
                            "choose where with --output-root")
    params.setdefault("progress", False)
    return params


def cmd_run(args: argparse.Namespace) -> int:
    import papermill as pm

    from .report import default_output_root, new_run_id, render_html

    params = run_parameters(args)
    root = Path(args.output_root) if args.output_root else default_output_root()
    run_id = new_run_id(args.model)
    final = root / args.model / run_id
    partial = final.with_name(f".{run_id}.partial")
    notebook = _notebook(args.model)
    partial.mkdir(parents=True)
    params["run_dir"] = str(partial)  # the notebook writes metrics.json and plots here; this command renames it
    out_nb = partial / f"{args.model}.ipynb"
    try:
        pm.execute_notebook(str(notebook), str(out_nb), parameters=params, kernel_name=args.kernel,
                            progress_bar=not args.quiet, cwd=str(_checkout()))
    except Exception as e:  # noqa: BLE001 - the partial folder keeps the executed notebook for diagnosis
        print(f"the notebook failed; the partial run (with the executed notebook) is in {partial}\n{e}",
              file=sys.stderr)
        return 1
    for name, code in ((f"{args.model}.html", True), (f"{args.model}-report.html", False)):
        try:
            render_html(out_nb, partial / name, code=code)
        except Exception as e:  # noqa: BLE001 - the HTML is a convenience; the run itself is complete
            print(f"warning: could not render {name} ({e})", file=sys.stderr)
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    print(f"report: {final}")
    for name in sorted(p.name for p in final.iterdir()):
        print(f"  {name}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import export, recipes
    from .models import build_model
    from .nn.checkpoints import check_md5

    r = recipes.get(args.model)
    md5 = check_md5(args.weights, r.checkpoint_md5) if args.weights else None
    path = export.export_onnx(r, build_model(args.model, args.weights), weights_md5=md5, batch=args.bs,
                              out_path=args.out, force=True)
    print(path)
    print(export.atc_command(r, str(path), args.bs or 1))
    return 0


def cmd_bins(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import recipes
    from .backends.bins import write_info, write_input

    r = recipes.get(args.model)
    ds = r.open_dataset(args.data_root).subset(args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries, failed = [], []
    for s in tqdm(ds, desc=f"{r.name} -> {out}", unit="img"):
        try:
            views, _ = r.preprocess(s.path)
        except Exception as e:  # noqa: BLE001
            failed.append((s.path, f"{type(e).__name__}: {e}"))
            continue
        for v, a in enumerate(views):
            folder = out if len(views) == 1 else out / f"view{v}"
            folder.mkdir(exist_ok=True)
            write_input(a, folder / f"{s.key}.bin")
            if v == 0:
                entries.append((str(folder / f"{s.key}.bin"), a.shape[-1], a.shape[-2]))
    write_info(entries, out.with_suffix(".info"))
    print(f"{len(entries)} inputs in {out}, list in {out.with_suffix('.info')}; {len(failed)} unreadable")
    for p, why in failed[:10]:
        print(f"  skipped {p}: {why}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zooinfer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="models and their published figures").set_defaults(fn=cmd_list)
    run = sub.add_parser("run", help="render a model's notebook into outputs/<model>/<run-id>/")
    run.add_argument("model")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="notebook parameter (YAML value), e.g. -p bs 8 -p weights /data/x.pth "
                          "(-p progress true: the pipeline's progress bar in the notebook too)")
    run.add_argument("-f", "--file", action="append", help="YAML file of parameters (e.g. params/dpn131.yaml)")
    run.add_argument("--output-root", help="parent of <model>/<run-id>/ (default: the checkout's outputs/)")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    run.add_argument("-q", "--quiet", action="store_true", help="no papermill cell progress bar")
    run.set_defaults(fn=cmd_run)
    ex = sub.add_parser("export", help="export the ONNX file (and print the atc command)")
    ex.add_argument("model")
    ex.add_argument("--weights", help="published checkpoint file (default: synthetic weights)")
    ex.add_argument("--out", required=True, help="ONNX file to write")
    ex.add_argument("--bs", type=int, help="static batch size (default: dynamic batch axis)")
    ex.set_defaults(fn=cmd_export)
    bins = sub.add_parser("bins", help="write preprocessed .bin inputs + .info list for the Ascend tools")
    bins.add_argument("model")
    bins.add_argument("--data-root", help="dataset root (default: the embedded sample)")
    bins.add_argument("--out", required=True, help="folder for <key>.bin files")
    bins.add_argument("--limit", type=int, help="only the first N images")
    bins.set_defaults(fn=cmd_bins)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ZooinferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
