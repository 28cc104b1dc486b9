"""The ``schedgen`` command line. Each command parses options and calls one library function.

Errors a user can cause (:class:`~schedgen.errors.SchedgenError`) are printed as one
line on stderr with exit code 1; progress goes to stderr so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from .errors import SchedgenError

__all__ = ["app", "main"]


# Help display only. Every value is declared as text with a metavar naming what it
# takes (INTEGER, FLOAT, ...): the library parses and checks numbers, so bad input
# gets schedgen's one ``error:`` line and exit 1, not typer's usage block and exit 2.
# Flags get ``metavar=""``: typer 0.29 shows ``<bool>`` (and ``<str>`` beside an
# argument's metavar), as if a flag took a value.
FLAG = ""


class _Argument(TyperArgument):
    def display_type_rich(self, ctx):  # the metavar says what the argument is
        return None


class _HelpDisplay:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in self.params:
            if type(p) is TyperArgument and p.metavar:
                p.__class__ = _Argument

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = FLAG
        return opt


class _Command(_HelpDisplay, TyperCommand):
    pass


class _Group(_HelpDisplay, TyperGroup):
    pass


app = typer.Typer(
    name="schedgen",
    help="Deterministic, precomputed mini-batch schedules: build, inspect, verify, export, plot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)
STORE_HELP = "A schedule store (.zarr) or URL."


@contextlib.contextmanager
def _edge():
    """Turn a SchedgenError into one line on stderr and exit code 1; show warnings as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except SchedgenError as exc:
            _flush_warnings(caught)
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted; nothing was written under the final name", err=True)
            raise typer.Exit(code=130) from None
    _flush_warnings(caught)


def _flush_warnings(caught) -> None:
    seen = set()
    for w in caught:
        msg = str(w.message)
        if msg not in seen and w.category.__module__.startswith(("schedgen", "builtins")):
            seen.add(msg)
            typer.echo(f"warning: {msg}", err=True)


@contextlib.contextmanager
def _progress(label: str, quiet: bool):
    """Yield a ``progress(done, total, stage="batches")`` callback drawing rich bars on stderr.

    Each stage (the fingerprint, the row-sum pass, k-means, the Nyström features, the
    batches) gets its own line with its rate and ETA. The batches' bar starts at their
    first call; a stage before them shows once it has run for a second (most builds
    finish those in less), so input errors found after a quick fingerprint still print
    their one line alone.
    """
    bar = None
    tasks: dict = {}
    started: dict = {}

    def update(done: int, total: int, stage: str = "batches") -> None:
        nonlocal bar
        if quiet:
            return
        now = time.monotonic()
        if stage != "batches" and stage not in tasks and now - started.setdefault(stage, now) < 1.0:
            return
        if bar is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=Console(stderr=True),
            )
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(label if stage == "batches" else f"{label}: {stage}", total=total, rate="")
        t = bar.tasks[tasks[stage]]
        unit = "batches" if stage == "batches" else "rows"
        rate = f"{t.speed:.1f} {unit}/s" if t.speed and total > 1 else ""
        bar.update(t.id, completed=done, total=total, rate=rate)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()


def _print(obj, as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(obj, sort_keys=True))
    else:
        typer.echo(human)


@app.command(cls=_Command)
def build(
    dataset: str = typer.Option("digits", metavar="NAME", help="digits, svhn, cifar10, mnist, fashion-mnist, or npz:PATH"),
    k: str = typer.Option("50", "--k", metavar="INTEGER", help="Batch size."),
    method: str = typer.Option("mmd", metavar="mmd|random|learn2mix|dpp|submodular", help="mmd (default), random, learn2mix, dpp or submodular."),
    split: str = typer.Option("train", metavar="train|test", help="train or test."),
    seed: str = typer.Option("0", metavar="INTEGER", help="Seed of every random draw (subsamples, permutations)."),
    epochs: str = typer.Option("1", metavar="INTEGER", help="Epochs (random, learn2mix, dpp, submodular)."),
    solver: Optional[str] = typer.Option(None, metavar="swap|greedy|lp", help="MMD batch solver: swap (default: lowest MMD²), greedy, or lp (the paper)."),
    kernel: str = typer.Option("rbf", metavar="rbf|poly", help="rbf or poly."),
    bandwidth: str = typer.Option("median", metavar="SIGMA|median", help="RBF sigma: 'median' (heuristic) or a positive number."),
    degree: str = typer.Option("3", metavar="INTEGER", help="Polynomial kernel degree."),
    coef0: str = typer.Option("1.0", metavar="FLOAT", help="Polynomial kernel constant c in (x.y/D + c)^d."),
    paper_coefficients: bool = typer.Option(False, "--paper-coefficients", metavar=FLAG, help="Use the paper's eq. 6 literally (no factor 2)."),
    pca: Optional[str] = typer.Option(None, metavar="INTEGER", help="PCA dims (default 128 when input has >256 dims; 0 keeps features)."),
    standardize: bool = typer.Option(False, "--standardize", metavar=FLAG, help="Standardise features before PCA."),
    mixing_rate: str = typer.Option("0.1", metavar="FLOAT", help="learn2mix mixing rate gamma in (0, 1]."),
    groups: Optional[str] = typer.Option(None, metavar="kmeans:C", help="learn2mix groups without labels: kmeans:C."),
    batches_per_epoch: Optional[str] = typer.Option(None, metavar="INTEGER", help="learn2mix batches per epoch (default ceil(N/k))."),
    submodular_normalize: bool = typer.Option(False, "--submodular-normalize", metavar=FLAG, help="submodular: the authors' code's per-term normalisation by the sum (cancels the weights)."),
    approx: Optional[str] = typer.Option(None, metavar="nystrom:M", help="Use a rank-M Nyström factor of the kernel (k-means landmarks, O(N·M) memory): dpp samples from it (dual sampler) instead of the exact N x N kernel; mmd takes its row sums from it (no N² pass; batch MMD² of the factor's kernel). Its measured error is printed."),
    pair: Optional[str] = typer.Option(None, metavar="random|class-matched|shifted[:S]", help="Add partner batches (ITRA), any method: random, class-matched (S1's class counts) or shifted:S (batch b+S of the epoch, S default 1)."),
    partner_size: Optional[str] = typer.Option(None, metavar="INTEGER", help="Samples per partner batch (default k; needs --pair)."),
    data_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Where dataset files live (default ~/.cache/schedgen/data)."),
    download: bool = typer.Option(False, "--download", metavar=FLAG, help="Fetch missing dataset files."),
    out_dir: Path = typer.Option(Path("schedules"), metavar="DIR", help="Output and cache directory."),
    force: bool = typer.Option(False, "--force", metavar=FLAG, help="Rebuild even if the cached store exists."),
    device: str = typer.Option("auto", metavar="auto|cpu|cuda", help="auto, cpu or cuda."),
    engine: str = typer.Option("local", metavar="local|ray[:ADDRESS]", help="Where the exact N² row-sum pass runs (mmd, submodular, dpp): local (in process, default) or ray (tasks on a Ray cluster: RAY_ADDRESS, else a new local one; ray:HOST:PORT joins a running cluster; pip install 'schedgen[ray]'). Same bytes either way: not part of the cache key."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar=FLAG, help="No progress bar."),
) -> None:
    """Build a schedule (or return the cached one) and print where it is."""
    from .build import BuildConfig, build as run_build

    with _edge():
        # Numeric options go through as text: BuildConfig.from_text parses and checks them
        # (schedgen.params), so a bad number is one error line, as for every other input.
        config = BuildConfig.from_text(
            dataset=dataset, k=k, method=method, split=split, seed=seed, epochs=epochs, solver=solver,
            kernel=kernel, bandwidth=bandwidth, degree=degree, coef0=coef0,
            paper_coefficients=paper_coefficients, pca=pca, standardize=standardize, mixing_rate=mixing_rate,
            groups=groups, batches_per_epoch=batches_per_epoch,
            submodular_normalize=submodular_normalize, approx=approx, pair=pair, partner_size=partner_size,
            data_dir=str(data_dir) if data_dir else None,
            download=download, out_dir=out_dir, force=force, device=device,
            engine=engine,
        )
        with _progress(f"{method} k={k}", quiet or as_json) as progress:
            result = run_build(config, progress=progress)
        if result.cache_hit:
            human = f"cache hit: {result.path} (built earlier with the same inputs; --force rebuilds)"
        else:
            human = (
                f"built {result.path}: {result.n_batches} batches (k={result.k}, {result.n_epochs} epoch(s)) "
                f"in {result.seconds:.1f} s, digest {result.digest[:16]}"
            )
        err = result.params.get("approx_error")
        if isinstance(err, dict):  # --approx: the factor's measured error, also in --json's params
            human += (
                f"\n  --approx {result.params.get('approx')}: relative error of the kernel's row sums "
                f"median {err['s_tot_median']:.2g}, max {err['s_tot_max']:.2g}, of the kernel (Frobenius) "
                f"{err['frobenius']:.2g}, on {err['rows']} seeded rows"
            )
        _print(result.to_json(), as_json, human)


@app.command(cls=_Command)
def info(
    path: str = typer.Argument(..., metavar="PATH", help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON object."),
) -> None:
    """Describe a schedule store."""
    from .catalog import info as run_info

    with _edge():
        d = run_info(path)
        ds = d["dataset"]
        human = "\n".join(
            [
                f"{d['path']}",
                f"  method      {d['method']}  k={d['k']}",
                f"  batches     {d['n_batches']} in {d['n_epochs']} epoch(s), sizes {d['batch_size_min']}..{d['batch_size_max']}",
                f"  dataset     {ds.get('name')} ({ds.get('split')}), N={ds.get('n_samples')}, {ds.get('n_classes')} classes",
                f"  digest      {d['digest']}",
                f"  format      {d['format']}",
                f"  params      {json.dumps(d['params'], sort_keys=True)}",
                f"  arrays      {', '.join(d['batch_arrays'] + d['epoch_arrays']) or '-'}",
            ]
            + ([f"  registry    {d['registry']['name']} ({d['registry']['files']} files, "
                f"{d['registry']['bytes']} bytes, verified against its manifest)"] if "registry" in d else [])
        )
        _print(d, as_json, human)


@app.command(cls=_Command)
def verify(
    path: str = typer.Argument(..., metavar="PATH", help=STORE_HELP),
    dataset: Optional[str] = typer.Option(None, metavar="NAME", help="Also check the dataset fingerprint."),
    split: Optional[str] = typer.Option(None, metavar="train|test", help="The dataset's split (default: the store's)."),
    data_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Where dataset files live."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON object."),
) -> None:
    """Recompute the digest (and the dataset fingerprint) and compare with the store."""
    from .catalog import verify as run_verify

    with _edge():
        d = run_verify(path, dataset=dataset, split=split, data_dir=str(data_dir) if data_dir else None)
        checked = ["digest"] + (["attributes"] if d["attributes_ok"] else []) + (["dataset fingerprint"] if dataset else [])
        human = f"ok: {path} digest {d['digest'][:16]}" + (
            " matches" if len(checked) == 1 else " and " + " and ".join(checked[1:]) + " match")
        if "note" in d:
            human += f"\n  note: {d['note']}"
        _print(d, as_json, human)


@app.command("list", cls=_Command)
def list_(
    directory: str = typer.Argument("schedules", metavar="DIR|URL", help="A local folder of stores, or a registry (s3://, http(s)://, file://, or a folder with index.json)."),
    verify: bool = typer.Option(False, "--verify", metavar=FLAG, help="Also read every store and recompute its digests (ok/FAILED per row)."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON array."),
) -> None:
    """List the schedule stores in a folder or a registry (from their attributes or the catalog, not verified: --verify checks the digests)."""
    from .catalog import list_schedules

    with _edge():
        rows = list_schedules(directory, verify=verify)

        def line(r):
            variant = "".join([f" {r['solver']}" if r.get("solver") else "",
                               f" kernel={r['kernel']}" if r.get("kernel") not in (None, "rbf") else ""])
            # .get: rows come from a catalog (checked, but only for the fields it needs).
            head = r.get("path") if "method" not in r else (
                f"{r.get('path')}  {r['method']}{variant} k={r.get('k')} {r.get('n_batches')} batches "
                f"{r.get('dataset')} ({r.get('split')})")
            if not verify:
                return f"{head}  ERROR {r['error']}" if "error" in r else head
            return f"{head}  ok" if r.get("verified") is True else f"{head}  FAILED {r.get('error')}"

        _print(rows, as_json, "\n".join(map(line, rows)) if rows else f"no schedule stores in {directory}")
        failed = [r for r in rows if r.get("verified") is False]
        if failed:  # one error line, after the table (and the warnings, as every error)
            raise SchedgenError(f"{len(failed)} of {len(rows)} stores failed verification")
        if rows and not verify and not as_json:
            typer.echo("note: read from attributes (or a registry's catalog) only, digests not checked (list --verify checks them)", err=True)


@app.command(cls=_Command)
def push(
    store: Path = typer.Argument(..., metavar="STORE", help="A local schedule store (.zarr)."),
    url: str = typer.Argument(..., metavar="URL", help="Registry root: s3://BUCKET/PREFIX, file:///PATH or a local folder (credentials from the usual fsspec/boto configuration)."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON object."),
) -> None:
    """Publish a store to a registry: its files, then its manifest, then its catalog entry."""
    from .registry import push as run_push

    with _edge():
        r = run_push(store, url)
        what = "pushed" if r.uploaded else "already in the registry:"
        _print(r.to_json(), as_json, f"{what} {r.url} ({r.files} files, {r.n_bytes} bytes, key {r.key})")


@app.command(cls=_Command)
def pull(
    url: str = typer.Argument(..., metavar="URL", help="A store in a registry: REGISTRY/NAME.zarr (schedgen list REGISTRY shows the names)."),
    directory: Path = typer.Argument(Path("schedules"), metavar="DIR", help="Local folder to put the store in."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON object."),
) -> None:
    """Download a store from a registry, check every file against its manifest and the store's digests, then move it into place."""
    from .registry import pull as run_pull

    with _edge():
        r = run_pull(url, directory)
        what = "pulled" if r.downloaded else "already here:"
        _print(r.to_json(), as_json, f"{what} {r.path} ({r.files} files, {r.n_bytes} bytes, verified)")


@app.command(cls=_Command)
def export(
    path: str = typer.Argument(..., metavar="PATH", help=STORE_HELP),
    fmt: str = typer.Option("npy", "--format", metavar="npy|jsonl", help="npy (a folder of .npy files) or jsonl (one batch per line)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="PATH",
        help="Destination (default: beside the store; for a URL, the store's name in the current folder)."),
    index_dtype: str = typer.Option(
        "int64", "--index-dtype", metavar="int64|uint32|auto",
        help="npy: dtype of the sample-index arrays; uint32 halves them (needs N < 2**32), auto = uint32 when N < 2**32."),
    force: bool = typer.Option(False, "--force", metavar=FLAG, help="Replace an existing destination."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON object."),
) -> None:
    """Export a schedule for trainers without Zarr."""
    from .catalog import export as run_export

    with _edge():
        out = run_export(path, output, fmt=fmt, overwrite=force, index_dtype=index_dtype)
        _print({"path": str(out), "format": fmt}, as_json, f"wrote {out}")


@app.command(cls=_Command)
def plot(
    paths: list[str] = typer.Argument(..., metavar="PATH...", help=STORE_HELP + " Several (mmd, dpp, submodular, random stores of one dataset and k): their first epochs' prefix MMD² on one axes."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="File to write: .png, .pdf or .svg (the format follows the extension)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", metavar=FLAG, help="One store: also draw a seeded random order (needs the dataset)."),
    seed: Optional[str] = typer.Option(None, metavar="INTEGER", help="One store: seed of the random baseline (default 0)."),
    data_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Where the dataset files live."),
    force: bool = typer.Option(False, "--force", metavar=FLAG, help="Replace an existing file."),
    as_json: bool = typer.Option(False, "--json", metavar=FLAG, help="Print one JSON object."),
) -> None:
    """Draw a schedule: per-batch MMD² (mmd, dpp, submodular) or class proportions and losses per epoch (learn2mix); several stores: their MMD² curves overlaid."""
    from .plot import plot_stores

    with _edge():
        r = plot_stores(paths, output, data_dir=str(data_dir) if data_dir else None, baseline=baseline, seed=seed,
                        overwrite=force)
        summary = ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} undefined"
                            for k, v in r.series.items() if v is None or isinstance(v, float))
        _print({"path": str(r.path), "method": r.method, **r.series}, as_json, f"wrote {r.path}" + (f" ({summary})" if summary else ""))


@app.command(cls=_Command)
def serve(
    root: Path = typer.Option(..., "--root", metavar="DIR", help="The folder to serve: a registry (schedgen push writes one); builds are published into it."),
    host: str = typer.Option("127.0.0.1", metavar="HOST", help="Address to listen on (default: this machine only)."),
    port: str = typer.Option("8000", metavar="INTEGER", help="Port (0: any free port, printed at start)."),
    token_file: Optional[Path] = typer.Option(None, metavar="FILE", help="A file holding the bearer token builds need (one line); without it builds are disabled."),
    data_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Where the builds' datasets live (clients name a dataset, never a path)."),
    workers: str = typer.Option("1", metavar="INTEGER", help="Builds running at once (one process each)."),
    queue: str = typer.Option("8", metavar="INTEGER", help="Builds waiting beyond those (429 when full)."),
) -> None:
    """Serve a registry over HTTP: GET /schedules (catalog and store files), POST /builds (with a bearer token)."""
    with _edge():
        from .serve import serve as run_serve  # inside: a missing [serve] extra is one line

        run_serve(root, host=host, port=port, token_file=token_file, data_dir=data_dir, workers=workers, queue=queue)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
