"""``zooinfer``: a thin command line over the notebooks (papermill) and a few library helpers.

    zooinfer list                                   models and their recipes
    zooinfer run dpn131 -p bs 8                     render notebooks/dpn131.ipynb into outputs/dpn131/<run-id>/:
                                                    the executed notebook, its HTML, <model>-report.html (no code)
    zooinfer run dpn131 -f params/dpn131.yaml -p weights /data/dpn131-7af84be88.pth -p data_root /data/imagenet
    zooinfer export dpn131 --weights FILE --out dpn131.onnx [--bs 8]
    zooinfer bins dpn131 --data-root /data/imagenet --out ./prep_bin    .bin + .info inputs for ais_bench / benchmark
    zooinfer run dpn131 --resume outputs/dpn131/.<run-id>.partial    continue an interrupted run (its parameters)
    zooinfer rescore outputs/pyramidbox/<run-id> -p iou_thresh 0.4  the metrics again from the stored predictions
    zooinfer clean [--yes]                          list (and remove) the partial folders of interrupted runs
    zooinfer tune dpn131 [--budget 0.01] [--rank-subset 64]   the fastest passing configuration, layers kept in fp32
    zooinfer diff RUN_A RUN_B [--max-drop 0.5] [--max-slowdown 0.1] [--html diff.html]   what changed between runs
    zooinfer repeat outputs/dpn131/<run-id> 3       the run's samples twice more in fresh sessions: flips, spreads
    zooinfer run dpn131 --strict                    exit 4 when a speed figure is unstable or a LoadGen check fails
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

import yaml

from .errors import ZooinferError

#: exit statuses of ``zooinfer run`` (also in its --help)
EXIT_OK, EXIT_UNEXPECTED, EXIT_CLEAR_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
#: ``zooinfer run --strict``: the run is complete but a reported speed figure cannot be trusted
EXIT_UNTRUSTED_SPEED = 4
RUN_EXIT_HELP = """exit status:
  0    the run is complete (report printed)
  1    an unexpected error (a bug, or a failure zooinfer has no clear message for; see the executed notebook)
  2    a clear error: a bad parameter, file, folder or dataset layout (the message says which); for an error
       inside the notebook also the cell it stopped in and where the executed notebook is. Also a file of the
       run that could not be written (a full disk, no permission): the message names it and the system's reason,
       and the run folder keeps its partial name (.<run-id>.partial): --resume FOLDER finishes it
  3    the run is complete but skipped more than 5% of its images (unreadable, or named by the ground truth and
       missing on disk): the accuracy does not describe the dataset (metrics.json "skipped")
  4    with --strict only: the run is complete but a reported speed figure cannot be trusted, each one named: a
       pure-inference row whose timings vary (cv above 15%, zooinfer.bench.UNSTABLE_CV) or whose timed outputs
       were not the model's, a LoadGen run that is INVALID or failed, an MLPerf audit that FAILED
  130  interrupted (Ctrl-C); the partial run folder is printed: zooinfer run MODEL --resume FOLDER continues it
       (only the samples it did not store run), zooinfer clean lists and removes such folders
  143  terminated (SIGTERM, e.g. from a job scheduler or kill): as 130, the notebook's kernel is shut down and
       the partial run folder printed"""
#: notebook parameters that name a file or folder: relative paths are the caller's, resolved before the notebook
#: runs (papermill runs it in the checkout)
PATH_PARAMETERS = ("weights", "data_root", "onnx_path", "om_path", "results_dir", "output_root")


def _checkout() -> Path:
    return Path(__file__).resolve().parents[2]


def _notebook(model: str) -> Path:
    from . import recipes

    recipes.get(model)  # an unknown model lists the known ones
    nb = _checkout() / "notebooks" / f"{model}.ipynb"
    if not nb.is_file():
        raise ZooinferError(f"no notebook for {model!r} at {nb} (run from a checkout of zooinfer)")
    return nb


def _parse_value(text: str):
    """papermill -p semantics: YAML scalars (8 -> int, null -> None, [1, 8] -> list), else the string. What YAML
    makes of it may be more than plain data (``!!binary`` -> bytes, a date): check it with
    ``parameters.plain_value`` before it reaches a notebook."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _output_root(args: argparse.Namespace) -> Path:
    from .report import default_output_root

    return Path(args.output_root) if getattr(args, "output_root", None) else default_output_root()


def partial_runs(root: Path) -> list[Path]:
    """The partial folders (``<root>/<model>/.<run-id>.partial``) of runs that were interrupted or failed (or are
    running now): what a resume starts from, and what ``zooinfer clean`` removes. A symbolic link named like one is
    listed too (clean leaves it)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*/.*.partial") if p.is_dir() or p.is_symlink())


def _running(partial: Path) -> bool:
    """Whether a live process holds the run folder ``partial`` (its run lock, or its store's writer lock:
    ``store.holder``); the pid in the folder's name says nothing (a resume keeps the interrupted run's name)."""
    from .store import holder

    return holder(partial) is not None


def cmd_list(args: argparse.Namespace) -> int:
    from . import recipes
    from .store import holder_info

    for name in recipes.NAMES:
        try:
            r = recipes.get(name)
            ref = ", ".join(f"{k} {100 * v:.2f}" for k, v in r.published.accuracy.items())
            print(f"{name:14s} {r.task:15s} input {r.input_shape}  published {ref}  checkpoint {r.checkpoint_file}")
        except ZooinferError as e:
            print(f"{name:14s} ({e})")
    partials = partial_runs(_output_root(args))
    if partials:
        print(f"\n{len(partials)} partial run folder(s) (interrupted or failed runs; zooinfer clean --yes removes "
              "them):")
        for p in partials:
            held = None if p.is_symlink() else holder_info(p)
            if p.is_symlink():
                note = "(a symbolic link: zooinfer clean leaves it)"
            elif held is not None:
                note = f"(running: being {held[1]} by pid {held[0] or 'unknown'})"
            else:
                note = _resumable(p)
            print(f"  {p}" + (f"  {note}" if note else ""))
    return 0


def _resumable(partial: Path) -> str:
    """'(120 of 5000 samples stored: zooinfer run MODEL --resume FOLDER continues it)', '(damaged: why)' for a
    store that cannot be read as written, or '' without a store."""
    from .store import PredictionStore, StoreError

    try:
        store = PredictionStore.open(partial, writable=False)
        fingerprint = store.fingerprint
    except StoreError as e:
        return f"(damaged: {e})"
    except (ZooinferError, OSError, ValueError):
        return ""
    total = (fingerprint.get("selection") or {}).get("samples", "?")
    return (f"({len(store)} of {total} samples stored: zooinfer run {fingerprint.get('model')} --resume {partial} "
            "continues it)")


def cmd_clean(args: argparse.Namespace) -> int:
    """List the partial folders of interrupted runs; remove them with ``--yes``: never one a live process holds
    (its run lock is taken while it is removed, so no resume starts meanwhile), never through a symbolic link."""
    from .store import FolderInUse, RunLock

    root = _output_root(args)
    partials = partial_runs(root)
    if not partials:
        print(f"no partial run folders under {root}")
        return 0
    status = EXIT_OK
    for p in partials:
        if p.is_symlink():
            print(f"kept {p} (a symbolic link, not a folder zooinfer made; remove it by hand if it is not wanted)")
            continue
        if not args.yes:
            print(f"kept {p} (its run is still running)" if _running(p) else f"{p}")
            continue
        try:
            lock = RunLock.take(p, doing="removed")
        except FolderInUse:
            print(f"kept {p} (its run is still running)")
            continue
        except ZooinferError as e:
            print(f"error: could not remove {p}: {e}", file=sys.stderr)
            status = EXIT_CLEAR_ERROR
            continue
        try:
            shutil.rmtree(p)
            print(f"removed {p}")
        except OSError as e:
            print(f"error: could not remove {p} ({e.strerror or e}: {e.filename}); the others are removed",
                  file=sys.stderr)
            status = EXIT_CLEAR_ERROR
        finally:
            lock.release()
    if not args.yes:
        print(f"{len(partials)} partial run folder(s); run zooinfer clean --yes to remove them")
    return status


#: parameters ``zooinfer run`` sets itself: the notebook's model is the command's argument, and the notebook writes
#: into the run folder the CLI owns
CLI_OWNED = {"run_dir": "the run folder it renders into; choose where with --output-root",
             "model": "the command's argument: zooinfer run MODEL"}


def _read_parameter_file(path: str) -> dict:
    """A YAML file of parameters; a missing or malformed file, or a value that is not plain data (a ``!!binary``
    value, a set, a date: papermill would write it into the notebook as code), is a ZooinferError naming it (and
    the line, or the parameter)."""
    from .parameters import plain_parameters

    f = Path(path)
    if not f.is_file():
        raise ZooinferError(f"parameter file not found: {f}" + (" (it is a folder)" if f.is_dir() else ""))
    try:
        data = yaml.safe_load(f.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{f}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(f)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ZooinferError(f"{where}: not valid YAML ({problem}); expected 'name: value' lines, e.g. 'bs: 8'") \
            from None
    except (OSError, UnicodeDecodeError) as e:
        raise ZooinferError(f"parameter file {f} cannot be read: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ZooinferError(f"{f}: expected 'name: value' lines (a YAML mapping), got a {type(data).__name__}")
    return plain_parameters(data, str(f))


def run_parameters(args: argparse.Namespace) -> dict:
    """The notebook parameters of ``zooinfer run``: the YAML files, then ``-p`` values; the progress bar off unless
    asked for (``-p progress true``): papermill shows its own cell progress, and a bar in the notebook would only
    end up in the rendered report. Relative paths are made absolute (the notebook runs in the checkout);
    ``workers`` (the old name) becomes ``processes``. Every value is plain data (``parameters.plain_value``), every
    one checked whether or not the run uses it: papermill writes anything else into the notebook as code."""
    from .parameters import plain_parameters, plain_value

    params: dict = {}
    for f in args.file or []:
        params.update(_read_parameter_file(f))
    for key, value in args.param or []:
        params[key] = plain_value(key, _parse_value(value))
    resume = getattr(args, "resume", None)
    if resume is not None:
        if params.get("resume") not in (None, resume):
            raise ZooinferError(f"--resume {resume} and -p resume {params['resume']} disagree; give one")
        params["resume"] = resume
    if params.get("resume") not in (None, "", "none", "None"):
        resumed = resumed_parameters(params["resume"], getattr(args, "model", None))
        params = {**plain_parameters(resumed, f"--resume {params['resume']} (its stored parameters)"), **params}
    owned = [k for k in CLI_OWNED if k in params]
    if owned:
        raise ZooinferError(f"parameter {owned[0]!r} is set by zooinfer run ({CLI_OWNED[owned[0]]})")
    if "workers" in params:
        from .config import RENAMED

        value = params.pop("workers")
        if "processes" in params and params["processes"] != value:
            raise ZooinferError(f"parameters 'workers' (the old name) and 'processes' disagree: {value!r} vs "
                                f"{params['processes']!r}; give only 'processes'")
        print(f"warning: parameter 'workers' is now called {RENAMED['workers']!r}; 'workers' will stop working",
              file=sys.stderr)
        params["processes"] = value
    for key in (*PATH_PARAMETERS, "resume"):
        value = params.get(key)
        if isinstance(value, str) and value not in ("", "none", "None"):
            params[key] = str(Path(value).expanduser().absolute())
    if params.get("compare") not in (None, "", "none", "None"):
        params["compare"] = _absolute_variants(params["compare"])
    params.setdefault("progress", False)
    return params


def _absolute_variants(value) -> list[str]:
    """The ``compare`` list with each ``bins:<folder>`` folder made absolute: a folder is the caller's, relative to
    where ``zooinfer run`` was started, not to the checkout the notebook runs in."""
    from .parameters import BINS_PREFIX, names_value

    names = names_value("compare", value)
    return [f"{BINS_PREFIX}{Path(n[len(BINS_PREFIX):]).expanduser().absolute()}"
            if n.startswith(BINS_PREFIX) and n[len(BINS_PREFIX):] else n for n in names]


#: parameters of an interrupted run that a resume does not take over (the command sets or decides them anew)
NOT_RESUMED = ("model", "run_dir", "resume", "progress")


def resumed_parameters(folder: str, model: str | None) -> dict:
    """The parameters the interrupted run in ``folder`` was started with (its ``predictions/fingerprint.json``),
    under the ones given now: ``zooinfer run MODEL --resume FOLDER`` alone continues it as it was; a parameter given
    that changes its predictions is refused when the run starts, naming the difference. Only the notebook's
    parameters are taken (``check_notebook_parameters``)."""
    from .config import check_resumable
    from .store import read_fingerprint

    check_resumable(folder)
    stored = read_fingerprint(folder)  # only the fingerprint: unreadable chunks are recomputed by the resume
    stored_model = stored.get("model")
    if not isinstance(stored_model, str):
        raise ZooinferError(f"--resume {folder}: its predictions/fingerprint.json names no model ('model' is "
                            f"{stored_model!r}); start a new run")
    if model is not None and stored_model != model:
        raise ZooinferError(f"--resume {folder} is a run of {stored_model!r}, not of {model!r}: zooinfer run "
                            f"{stored_model} --resume {folder}")
    nb = _notebook(stored_model)
    import papermill as pm

    known = set(pm.inspect_notebook(str(nb)))
    parameters = stored.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ZooinferError(f"--resume {folder}: 'parameters' in its predictions/fingerprint.json is a "
                            f"{type(parameters).__name__}, expected an object (an edited file); start a new run")
    return {k: v for k, v in parameters.items() if k in known and k not in NOT_RESUMED}


def check_notebook_parameters(notebook: Path, params: dict) -> None:
    """Refuse parameters the notebook does not have (papermill would only warn and run with the defaults), naming
    the close matches."""
    import papermill as pm

    from .config import close_matches

    known = set(pm.inspect_notebook(str(notebook)))
    unknown = [k for k in params if k not in known]
    if unknown:
        key = unknown[0]
        raise ZooinferError(f"unknown parameter {key!r} for {notebook.name}{close_matches(key, known)}; valid: "
                            f"{', '.join(sorted(known - set(CLI_OWNED)))}")


def _zooinfer_error_names() -> set[str]:
    """Class names of ZooinferError and its subclasses (the clear errors an executed notebook may end in)."""
    from . import evaluation  # noqa: F401 - imports the modules that define subclasses

    names, todo = set(), [ZooinferError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def _failed_cell(notebook: Path, index: int | None) -> str:
    """'cell 'prepare' (In [3]): info = ev.prepare()' for the cell an executed notebook stopped in."""
    import nbformat

    try:
        cells = nbformat.read(str(notebook), as_version=4).cells
        # the cell with the error output (papermill's cell_index counts before it inserted its own banner cells)
        failed = [i for i, c in enumerate(cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        if failed:
            index = failed[-1]
        cell = cells[index]
    except Exception:  # noqa: BLE001 - the location is a convenience
        return "an unknown cell"
    first = next((line for line in cell.source.splitlines() if line.strip()), "")
    count = cell.get("execution_count")
    return f"cell {cell.get('id', index)!r}" + (f" (In [{count}])" if count else "") + (f": {first}" if first else "")


def _notebook_failed(error: Exception, out_nb: Path, partial: Path, model: str | None = None) -> int:
    """What a user sees when the notebook stopped on an exception: the message itself (a clear ZooinferError) or
    its type and message, the cell, and where the executed notebook (with the full traceback) is. A file the run
    could not write (``OutputError``: a full disk) leaves a run that ``--resume`` finishes; it says so."""
    from .errors import OutputError

    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    clear = ename in _zooinfer_error_names()
    where = _failed_cell(out_nb, getattr(error, "cell_index", None))
    print(f"error: {evalue}" if clear else f"error: the notebook failed with {ename}: {evalue}", file=sys.stderr)
    print(f"  stopped in {where}", file=sys.stderr)
    print(f"  the executed notebook (full traceback): {out_nb}", file=sys.stderr)
    if ename == OutputError.__name__:
        print(f"  the partial run folder: {partial}; {_finish_later(model or partial.parent.name, partial)}",
              file=sys.stderr)
    else:
        print(f"  the partial run folder: {partial} (zooinfer clean --yes removes it)", file=sys.stderr)
    return EXIT_CLEAR_ERROR if clear else EXIT_UNEXPECTED


def _finish_later(model: str, partial: Path) -> str:
    """How a run stopped by a file it could not write is finished once the cause is mended."""
    return (f"once that is mended, zooinfer run {model} --resume {partial} finishes it (its stored predictions are "
            "not computed again)")


def _output_failed(error: Exception, model: str, partial: Path) -> int:
    """A file of the run (the executed notebook, an HTML page) that could not be written: the file and the
    system's reason; the run folder keeps its partial name."""
    print(f"error: {error}", file=sys.stderr)
    print(f"  the run folder stays {partial} (incomplete); {_finish_later(model, partial)}", file=sys.stderr)
    return EXIT_CLEAR_ERROR


#: the errno values of a storage that takes no more (full, over quota, a file size limit, read-only)
STORAGE_FULL = ("ENOSPC", "EDQUOT", "EFBIG", "EROFS")


def _storage_full(error: BaseException) -> bool:
    import errno

    return isinstance(error, OSError) and error.errno in {getattr(errno, n, None) for n in STORAGE_FULL} - {None}


def _logged_kernel_manager(log: Path) -> type:
    """A Jupyter kernel manager whose kernel process writes its own stderr (its log, and the tracebacks an
    interrupted kernel prints while it is shut down) into ``log`` rather than onto the user's terminal. Cell output
    is not affected: it travels over the kernel's channels into the executed notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):  # noqa: D102 - AsyncKernelManager.start_kernel with stderr -> log
            kw.setdefault("stderr", open(log, "ab"))  # noqa: SIM115 - the kernel process holds it
            return await super().start_kernel(**kw)

    return LoggedKernelManager


def _read_metrics(folder: Path) -> dict | None:
    """The run's metrics.json (what the notebook's ``finish()`` wrote), or None after saying why it is missing."""
    try:
        doc = json.loads((folder / "metrics.json").read_text())
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        return doc
    except (OSError, ValueError) as e:
        print(f"error: the run wrote no readable {folder / 'metrics.json'} ({e}); the partial run is in {folder}",
              file=sys.stderr)
        return None


def _after_run(final: Path, doc: dict | None = None) -> int:
    """Say on the terminal what the report says in its first lines: a parity failure, an md5 mismatch, skipped
    images (exit 3 for more than ``report.SKIP_THRESHOLD`` of them). ``doc``: the run's metrics.json (default:
    read from ``final``)."""
    from .report import EXIT_TOO_MANY_SKIPPED

    doc = _read_metrics(final) if doc is None else doc
    if doc is None:
        return EXIT_UNEXPECTED
    status = EXIT_OK
    parity_failure = (doc.get("onnx") or {}).get("parity_failure")
    if parity_failure:
        print(f"warning: {parity_failure}; no verdict is given", file=sys.stderr)
    if doc.get("md5_matches") is False:
        ck = doc.get("checkpoint") or {}
        print(f"warning: {ck.get('file')}: md5 {ck.get('md5')} differs from the published {ck.get('published_md5')} "
              f"({ck.get('published_file')}); results may not match the published figures", file=sys.stderr)
    skipped = doc.get("skipped") or {}
    if skipped.get("count"):
        print(f"warning: {skipped.get('summary')} (metrics.json 'skipped' names them all)", file=sys.stderr)
        if skipped.get("too_many"):
            status = EXIT_TOO_MANY_SKIPPED
    return status


def cmd_run(args: argparse.Namespace) -> int:
    from .config import RunConfig, check_output_folder
    from .report import new_run_id
    from .store import RunLock

    notebook = _notebook(args.model)  # an unknown model: the known ones, and nothing created
    params = run_parameters(args)
    check_notebook_parameters(notebook, params)
    if args.output_root and params.get("output_root") not in (None, "", "none", "None") and \
            Path(params["output_root"]) != Path(args.output_root).absolute():
        raise ZooinferError(f"--output-root {args.output_root} and -p output_root {params['output_root']} disagree; "
                            "give one")
    if args.output_root:
        root = Path(args.output_root).absolute()
        check_output_folder(root, "--output-root")
    elif params.get("output_root") not in (None, "", "none", "None"):
        root = Path(params["output_root"])  # honoured: the run folder this command owns goes under it
    else:
        root = _output_root(args)
    # every check the notebook's set-up cell makes, here, before a kernel starts (warnings were said above)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = RunConfig.from_parameters({**params, "model": args.model, "output_root": str(root)})
    # the run folder's lock (store.RunLock) is held from here until the folder is renamed complete: zooinfer list /
    # clean see the run as running, and a second resume of it is refused at once
    if params.get("resume") not in (None, "", "none", "None"):
        partial = Path(params["resume"])  # the interrupted run's folder: this command renames it when complete
        final = partial.with_name(partial.name.lstrip(".").removesuffix(".partial"))
        run_lock = _resume_lock(config, partial)
    else:
        run_id = new_run_id(args.model)
        final = root / args.model / run_id
        partial = final.with_name(f".{run_id}.partial")
        starting = final.with_name(f".{run_id}.starting")  # locked before zooinfer clean can see it as partial
        starting.mkdir(parents=True)
        run_lock = RunLock.take(starting, doing="run")
        starting.rename(partial)
        run_lock.moved(partial)
    params["run_dir"] = str(partial)  # the notebook writes metrics.json and plots here; this command renames it
    try:
        return _execute(args, notebook, params, partial, final)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (main's handler raises Terminated)
        what, status = _interruption(e)
        print(f"\n{what}; the partial run is in {partial}: zooinfer run {args.model} --resume {partial} "
              "continues it (zooinfer clean --yes removes it)", file=sys.stderr)
        return status
    finally:
        if final.is_dir() and not partial.exists():  # renamed complete: the finished folder keeps no lock file
            run_lock.moved(final)
            run_lock.release(remove=True)
        else:
            run_lock.release()


def _resume_lock(config, partial: Path):
    """The lock of the interrupted run's folder ``partial``, taken before anything is written into it (refused at
    once, naming the pid, while another process runs or resumes it), then every check of the resume that needs
    the dataset opened (its ground-truth files' digests, the selected samples): a refused resume leaves the folder
    as it was (its executed notebook included)."""
    from .evaluation import check_resume_dataset
    from .store import RunLock

    lock = RunLock.take(partial, doing="resumed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what opening the dataset warns about, the notebook says
            check_resume_dataset(config)
    except BaseException:
        lock.release()
        raise
    return lock


def _execute(args: argparse.Namespace, notebook: Path, params: dict, partial: Path, final: Path) -> int:
    """Execute the notebook into the ``partial`` folder, render its two HTML pages there and rename the folder to
    ``final`` only when every file is written (else it stays partial, exit 2, naming the file); the exit status."""
    import papermill as pm

    from . import report

    out_nb = partial / f"{args.model}.ipynb"
    try:
        pm.execute_notebook(str(notebook), str(out_nb), parameters=params, kernel_name=args.kernel,
                            progress_bar=not args.quiet, cwd=str(_checkout()),
                            kernel_manager_class=_logged_kernel_manager(partial / "kernel.log"))
    except pm.PapermillExecutionError as e:
        return _notebook_failed(e, out_nb, partial, args.model)
    except Exception as e:  # noqa: BLE001 - the partial folder keeps the executed notebook for diagnosis
        if _storage_full(e):  # papermill writes the executed notebook as it goes
            return _output_failed(report.write_failed(e.filename or out_nb, e), args.model, partial)
        print(f"error: the notebook could not run ({type(e).__name__}: {e}); the partial run is in {partial}",
              file=sys.stderr)
        return EXIT_UNEXPECTED
    try:
        for name, code in ((f"{args.model}.html", True), (f"{args.model}-report.html", False)):
            try:
                report.render_html(out_nb, partial / name, code=code)
            except ZooinferError:
                raise
            except Exception as e:  # noqa: BLE001 - nbconvert failed on it: the HTML is a convenience
                print(f"warning: could not render {name} ({type(e).__name__}: {e})", file=sys.stderr)
        doc = _read_metrics(partial)  # a run without its metrics.json is not complete
        if doc is None:
            return EXIT_UNEXPECTED
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    except ZooinferError as e:  # report.OutputError: a file it could not write
        return _output_failed(e, args.model, partial)
    except OSError as e:
        return _output_failed(report.write_failed(e.filename or partial, e), args.model, partial)
    print(f"report: {final}")
    for name in sorted(p.name for p in final.iterdir() if not p.name.startswith(".")):  # not the lock file
        print(f"  {name}")
    status = _after_run(final, doc)
    return _strict(doc) if getattr(args, "strict", False) and status == EXIT_OK else status


def _strict(doc: dict) -> int:
    """``--strict``: exit :data:`EXIT_UNTRUSTED_SPEED` naming each speed figure that cannot be trusted (unstable,
    outputs not checked equal, LoadGen INVALID, an audit FAILED), else 0."""
    from .bench import speed_problems
    from .loadgen.audit import problems

    found = speed_problems(doc.get("throughput") or []) + problems(doc.get("under_load"))
    for line in found:
        print(f"strict: {line}", file=sys.stderr)
    if found:
        print(f"strict: {len(found)} speed figure(s) cannot be trusted: exit {EXIT_UNTRUSTED_SPEED}", file=sys.stderr)
        return EXIT_UNTRUSTED_SPEED
    return EXIT_OK


def cmd_repeat(args: argparse.Namespace) -> int:
    """The run's selection evaluated again in fresh sessions (``zooinfer.repeat``): per-sample flips and each
    metric's spread; writes ``<run>/repeats/<id>/`` beside the run's own report, never into its files."""
    from .repeat import check_count, repeat_run

    check_count(args.n)  # before anything slow
    folder = repeat_run(args.run, args.n, progress=not args.quiet, say=None if args.quiet else print)
    print((folder / "report.md").read_text())
    print(f"repeatability report: {folder}")
    return EXIT_OK


def cmd_rescore(args: argparse.Namespace) -> int:
    """The metrics again from a run's stored predictions, with other metric parameters: no model, no images
    (the dataset's annotations are read). Writes ``<run>/rescored/<id>/`` (metrics.json, report.md) beside the
    run's own report."""
    from .rescore import rescore_run

    overrides = {key: _parse_value(value) for key, value in args.param or []}
    folder = rescore_run(args.run, overrides, progress=not args.quiet)
    print((folder / "report.md").read_text())
    print(f"rescored report: {folder}")
    return 0


DIFF_EXIT_HELP = """exit status:
  0    within the thresholds (or none given)
  1    past a threshold: a headline metric dropped more than --max-drop, or B is slower than --max-slowdown allows
  2    bad input, nothing compared: a folder that is not a finished run, a partial run, a run without stored
       predictions, runs of different models, datasets or selections, a threshold that is not a number"""


def cmd_diff(args: argparse.Namespace) -> int:
    """What changed between two runs of one model (``zooinfer.diff``): the metrics with paired 95% intervals, the
    per-class changes, the changed samples, speed ratios, parameter and environment differences, and a verdict
    against the thresholds (exit 0 / 1; bad input: 2). Reads the two run folders, writes only ``--html``."""
    from .diff import diff_runs, present

    max_drop = present.threshold_value("--max-drop", args.max_drop)  # before anything is read
    max_slowdown = present.threshold_value("--max-slowdown", args.max_slowdown, fraction=True)
    if args.html:
        present.check_html_path(args.html)
    d = diff_runs(args.run_a, args.run_b, max_drop=max_drop, max_slowdown=max_slowdown)
    print(d.text())
    if args.html:
        print(f"html: {d.write_html(args.html)}")
    print(d.verdict["line"])
    return d.exit_code


TUNE_EXIT_HELP = """exit status:
  0    a configuration passes the budget (the fastest passing one is marked in report.md and metrics.json)
  1    no configuration passes
  2    bad input, said before anything slow: an unknown or untunable variant, a budget that is not a fraction in
       (0, 1), a ranking subset below 1, a bad parameter or path"""


def cmd_tune(args: argparse.Namespace) -> int:
    """The fastest configuration that still passes (``zooinfer.tune``): rank the quantised layers of a
    low-precision build by their effect on the metric over a ranking subset, keep the worst in fp32 one at a time
    until the drop fits the budget; the fastest-passing table; the chosen set for ONNX Runtime, NNCF and ATC."""
    from .config import RunConfig, check_output_folder
    from .parameters import plain_value
    from .tune import tune_run
    from .tune.run import check_settings

    check_settings(args.variant, args.budget, args.rank_subset)  # before anything slow
    params: dict = {}
    for f in args.file or []:
        params.update(_read_parameter_file(f))
    for key, value in args.param or []:
        params[key] = plain_value(key, _parse_value(value))
    if "model" in params:
        raise ZooinferError(f"parameter 'model' is set by zooinfer tune ({CLI_OWNED['model'].replace('run', 'tune')})")
    if args.out is not None:
        check_output_folder(args.out, "--out")
    config = RunConfig.from_parameters({**params, "model": args.model, "progress": params.get("progress", False)})
    outcome, folder = tune_run(config, variant=args.variant, budget=args.budget, rank_subset=int(args.rank_subset),
                               verify=args.verify, max_keep=args.max_keep, out=args.out,
                               log=None if args.quiet else print)
    print(outcome.markdown())
    print(f"report: {folder}")
    return EXIT_OK if outcome.passed else 1


def cmd_export(args: argparse.Namespace) -> int:
    from . import export, recipes
    from .models import build_model
    from .nn.checkpoints import check_md5

    from .config import check_output_folder

    r = recipes.get(args.model)
    if args.weights and not Path(args.weights).is_file():
        raise ZooinferError(f"--weights: checkpoint file not found: {args.weights} (the published file is "
                            f"{r.checkpoint_file})")
    if args.bs is not None and args.bs < 1:
        raise ZooinferError(f"--bs must be an integer >= 1 (a static batch size), got {args.bs}")
    if Path(args.out).is_dir():
        raise ZooinferError(f"--out: {args.out} is a folder, expected the ONNX file to write (e.g. "
                            f"{Path(args.out) / (args.model + '.onnx')})")
    check_output_folder(Path(args.out).absolute().parent, "--out")
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
    from .paths import make_folder

    from .config import check_output_folder

    r = recipes.get(args.model)
    out = Path(args.out)
    check_output_folder(out, "--out")
    check_output_folder(out.absolute().parent, "--out (its .info list is written next to it)")
    if args.limit is not None and args.limit < 1:
        raise ZooinferError(f"--limit must be an integer >= 1, got {args.limit}")
    ds = r.open_dataset(args.data_root).subset(args.limit)
    make_folder(out)
    entries, failed = [], []
    for s in tqdm(ds, desc=f"{r.name} -> {out}", unit="img"):
        try:
            views, _ = r.preprocess(s.path)
        except Exception as e:  # noqa: BLE001
            failed.append((s.path, f"{type(e).__name__}: {e}"))
            continue
        for v, a in enumerate(views):
            folder = out if len(views) == 1 else out / f"view{v}"
            make_folder(folder)
            write_input(a, folder / f"{s.key}.bin", root=out)  # a full disk: a clear error, no truncated file
            if v == 0:
                entries.append((str(folder / f"{s.key}.bin"), a.shape[-1], a.shape[-2]))
    write_info(entries, out.with_suffix(".info"), root=out)
    print(f"{len(entries)} inputs in {out}, list in {out.with_suffix('.info')}; {len(failed)} unreadable")
    for p, why in failed[:10]:
        print(f"  skipped {p}: {why}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zooinfer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="models and their published figures; partial folders of interrupted runs")
    ls.add_argument("--output-root", help="where runs are written (default: the checkout's outputs/)")
    ls.set_defaults(fn=cmd_list)
    clean = sub.add_parser("clean", help="list the partial folders of interrupted runs; --yes removes them")
    clean.add_argument("--output-root", help="where runs are written (default: the checkout's outputs/)")
    clean.add_argument("--yes", action="store_true", help="remove them (never the folder of a run still running)")
    clean.set_defaults(fn=cmd_clean)
    run = sub.add_parser("run", help="render a model's notebook into outputs/<model>/<run-id>/",
                         epilog=RUN_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("model")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="notebook parameter (YAML value), e.g. -p bs 8 -p weights /data/x.pth "
                          "(-p progress true: the pipeline's progress bar in the notebook too)")
    run.add_argument("-f", "--file", action="append", help="YAML file of parameters (e.g. params/dpn131.yaml)")
    run.add_argument("--output-root", help="parent of <model>/<run-id>/ (default: the checkout's outputs/)")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    run.add_argument("-q", "--quiet", action="store_true", help="no papermill cell progress bar")
    run.add_argument("--resume", metavar="FOLDER",
                     help="continue the interrupted run in FOLDER (outputs/<model>/.<run-id>.partial): only the "
                          "samples it did not store run, with its parameters unless given again; refused, naming "
                          "the difference, if the checkpoint, dataset, recipe or backend settings differ")
    run.set_defaults(fn=cmd_run)
    run.add_argument("--strict", action="store_true",
                     help="exit 4 when a reported speed figure cannot be trusted (see exit status 4), naming which")
    rp = sub.add_parser("repeat", help="evaluate a run's samples again in fresh sessions: flips and metric spreads",
                        description="Evaluate the samples of a finished run N - 1 more times, each in a fresh "
                                    "backend session (the run's stored predictions are the first of the N), and "
                                    "report the samples whose prediction changed between repeats and each "
                                    "metric's spread (min, max, std): non-determinism told apart from a regression "
                                    "(zooinfer diff reads the spread). Writes <run>/repeats/<id>/ (metrics.json, "
                                    "report.md); the run's own files are not changed (docs/repeatability.md).")
    rp.add_argument("run", help="the run folder (outputs/<model>/<run-id>)")
    rp.add_argument("n", metavar="N", help="evaluations in all, >= 2 (the run's own is the first)")
    rp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    rp.set_defaults(fn=cmd_repeat)
    rs = sub.add_parser("rescore", help="recompute a run's metrics from its stored predictions (no model, no images)",
                        description="Recompute the metrics of a run from its stored predictions (predictions/) with "
                                    "other metric parameters, e.g. -p iou_thresh 0.4 (WIDER FACE) or -p evaluator "
                                    "faster-coco-eval (COCO). No model and no images are needed; the dataset's "
                                    "annotations are read from the run's data_root. Writes <run>/rescored/<id>/ "
                                    "(metrics.json, report.md) beside the run's own report.")
    rs.add_argument("run", help="the run folder (outputs/<model>/<run-id>)")
    rs.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="a metric parameter, e.g. -p iou_thresh 0.4")
    rs.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rs.set_defaults(fn=cmd_rescore)
    df = sub.add_parser("diff", help="what changed between two runs of one model (metrics, samples, speed)",
                        description="Compare two finished (or rescored) run folders of the same model, dataset "
                                    "and selection\nfrom their stored predictions: every metric's change with a "
                                    "paired bootstrap 95% interval,\nper-class changes, the samples whose prediction "
                                    "changed (worst first), throughput and\nstage-time ratios, and what differs in "
                                    "their parameters and environments.\nNothing is written into the run folders "
                                    "(docs/diff.md).",
                        epilog=DIFF_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    df.add_argument("run_a", metavar="RUN_A", help="the reference run folder (outputs/<model>/<run-id>, or a "
                                                   "rescored report in it: <run>/rescored/<id>)")
    df.add_argument("run_b", metavar="RUN_B", help="the run compared with it")
    df.add_argument("--max-drop", metavar="PTS", help="fail (exit 1) when a headline metric of RUN_B is more than "
                                                      "PTS percentage points below RUN_A's (0: any drop)")
    df.add_argument("--max-slowdown", metavar="FRACTION", help="fail (exit 1) when RUN_B's throughput at a batch "
                                                               "size is more than FRACTION below RUN_A's (0.1: 10%%)")
    df.add_argument("--html", metavar="FILE", help="also write the report as one HTML page with pictures of the "
                                                   "worst changed samples")
    df.set_defaults(fn=cmd_diff)
    tn = sub.add_parser("tune", help="the fastest configuration that still passes: which layers to keep in fp32",
                        description="Rank the quantised layers of a low-precision build by their effect on the "
                                    "metric over a ranking subset, keep the worst in fp32 one at a time until the "
                                    "drop from the reference fits the budget; then time ONNX Runtime fp32 / INT8 / "
                                    "the tuned INT8 (and OpenVINO where installed) per batch size and mark the "
                                    "fastest passing configuration. Writes <run folder>/report.md, metrics.json "
                                    "(fastest_passing) and precision/ (ONNX Runtime, NNCF and ATC files).",
                        epilog=TUNE_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tn.add_argument("model")
    tn.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="run parameter (as for zooinfer run), e.g. -p weights /data/x.pth -p data_root /data/x "
                         "-p limit 500 -p batch_sizes [1,8]")
    tn.add_argument("-f", "--file", action="append", help="YAML file of parameters (e.g. params/dpn131.yaml)")
    tn.add_argument("--variant", default="onnxruntime-int8", help="the low-precision variant to tune (default "
                                                                  "onnxruntime-int8)")
    tn.add_argument("--budget", default=None, help="the largest relative metric drop that passes, a fraction "
                                                   "(default: the guides' rule, 0.01 = within 1%%)")
    tn.add_argument("--rank-subset", default=64, metavar="N", help="samples the search ranks layers on (the first N "
                                                                   "of the run's; default 64, clipped to the run's)")
    tn.add_argument("--verify", type=int, default=8, metavar="K", help="noisiest layers verified with the metric "
                                                                       "(default 8)")
    tn.add_argument("--max-keep", type=int, default=16, metavar="K", help="layers kept in fp32 at most (default 16)")
    tn.add_argument("--out", metavar="DIR", help="the run folder to write (default: outputs/<model>/<run-id>-tune)")
    tn.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    tn.set_defaults(fn=cmd_tune)
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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the terminal as one 'warning: ...' line (no source line of ours)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, ``kill``), raised where the command is, as Ctrl-C raises KeyboardInterrupt: the
    same paths then run (papermill shuts the notebook's kernel down, the partial run folder is said)."""


def _terminate(signum: int, frame: object) -> None:
    """main's SIGTERM handler: once; a second SIGTERM ends the process at once (the default)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def _interruption(error: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped the command, in the words of its one line, and the exit status."""
    return ("terminated (SIGTERM)", EXIT_TERMINATED) if isinstance(error, Terminated) else \
        ("interrupted", EXIT_INTERRUPTED)


def _on_sigterm(handler: object) -> object:
    """Install ``handler`` for SIGTERM (where this runs in the main thread); returns the one it replaces."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, TypeError):  # not the main thread; or no Python-level handler to put back
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    sigterm = _on_sigterm(_terminate)
    try:
        return args.fn(args)
    except ZooinferError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CLEAR_ERROR
    except KeyboardInterrupt as e:
        what, status = _interruption(e)
        print(f"\n{what}", file=sys.stderr)
        return status
    finally:
        warnings.showwarning = shown
        if sigterm is not None:
            _on_sigterm(sigterm)


if __name__ == "__main__":
    sys.exit(main())
