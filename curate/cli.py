"""The `curate` command line. Parsing only: every command calls into the library."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from manifests.faults import EnvironmentFault

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Curate audio-visual video datasets (AVSync15, Landscape, VGGSS, custom).")
sync_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The audio-visual sync classifier.")
app.add_typer(sync_app, name="sync")
models_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="The model weights the recipes use: list them, pull them into the cache.")
app.add_typer(models_app, name="models")

OutOpt = typer.Option(..., "--out", "-o", help="output directory of the run")
WorkersOpt = typer.Option(2, "--workers", "-w", help="parallel workers (Ray tasks / actors)")
AddressOpt = typer.Option(None, "--address", help="Ray cluster address; none: start a local Ray")
GpusOpt = typer.Option(None, "--gpus", help="GPUs to use (default: all Ray sees)")
ExecOpt = typer.Option("ray", "--executor", help="ray (default) or local (serial, for debugging)")
DownloadWorkersOpt = typer.Option(None, "--download-workers",
                                  help="parallel downloads (I/O bound, apart from --workers; default 16)")
MaxRequestsOpt = typer.Option(None, "--max-requests-per-s",
                              help="global rate of download requests over all workers (e.g. 2)")
TrustOpt = typer.Option(False, "--trust-checkpoint",
                        help="read model files that need full unpickling (can run code: "
                             "only for files you trust); default: weights only")


def _trust(trust: bool) -> None:
    if trust:     # read by sync_classifier.model._torch_load here and in local Ray workers
        from sync_classifier.model import TRUST_ENV
        import os
        os.environ[TRUST_ENV] = "1"


OfflineOpt = typer.Option(False, "--offline", help="never touch the network for weights "
                          "(also $CURATE_OFFLINE=1): only cached files are used")


def _offline(flag: bool) -> None:
    """--offline: for this process and the workers it starts (they inherit the environment)."""
    import os
    from curate.config.weights import OFFLINE_ENV, offline
    if flag:
        os.environ[OFFLINE_ENV] = "1"
    if offline():
        os.environ["HF_HUB_OFFLINE"] = "1"      # open_clip's cache: the Hugging Face hub


def _doctor_first(recipe: str, out: Path, options: dict, config: Optional[Path]) -> None:
    """`curate build` refuses a missing essential with the doctor's row, before any work."""
    from curate.reports.doctor import blocker, run_checks
    row = blocker(run_checks(recipe, out, options, config))
    if row is not None:
        raise ValueError(f"{row.message()} (`curate doctor {recipe}` lists every check)")


CookiesOpt = typer.Option(None, "--cookies", help="yt-dlp cookies file; repeat the option for "
                                                 "several, used in turn after a bot check")
ExtractorArgsOpt = typer.Option(None, "--yt-extractor-args",
                                help="yt-dlp extractor arguments IE:ARG=V[;ARG=V] (allow-listed, "
                                     "e.g. youtube:po_token=...); repeatable")
JsRuntimeOpt = typer.Option(None, "--js-runtime", help="JavaScript runtime for YouTube's "
                            "challenges, NAME[:PATH] (deno, node, bun, quickjs); default: the "
                            "deno this environment ships")


def _yt_options(cookies: Optional[List[str]], extractor_args: Optional[List[str]],
                js_runtime: Optional[str] = None) -> dict:
    from curate.ops.ytopts import cookie_files, parse_extractor_args, parse_js_runtime
    return {"cookiefile": cookie_files(cookies), "extractor_args": parse_extractor_args(extractor_args),
            "js_runtimes": parse_js_runtime(js_runtime)}


_EXECUTORS: list = []      # executors of this command: shut down when it ends, however


def _shutdown_executors() -> None:
    while _EXECUTORS:
        shutdown = getattr(_EXECUTORS.pop(), "shutdown", None)
        if shutdown is not None:
            shutdown()


def _executor(kind: str, workers: int, address: Optional[str], gpus: Optional[float]):
    from curate.execution.make import make_executor
    ex = make_executor(kind, workers=workers, address=address, gpus=gpus)
    _EXECUTORS.append(ex)
    return ex


_VERBOSE: list[bool] = [False]     # -v: a failure's traceback too


def _fail(e: Exception) -> None:
    if _VERBOSE[0]:
        import traceback
        traceback.print_exception(e)
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _guarded(out: Path, body: Callable[[], None]) -> None:
    """Run a command that writes into ``out``: one writer per output (``curate.execution.lock``);
    SIGTERM / SIGINT stop it cleanly (``curate.execution.interrupt``): exit 143 / 130, finished work
    kept; a bad input or option is one ``error:`` line and exit 2."""
    from curate.execution.interrupt import INTERRUPTED_MESSAGE, Interrupted, interruptible
    from curate.execution.lock import output_lock

    command = " ".join(["curate", *sys.argv[1:]])[:300]
    try:
        with interruptible():
            with output_lock(out, command):
                try:
                    body()
                finally:
                    # the workers end before the lock goes (nothing writes into `out` after),
                    # and a command run in process (tests, a notebook) leaves no Ray behind
                    _shutdown_executors()
    except Interrupted as e:
        typer.secho(INTERRUPTED_MESSAGE, fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(e.exit_code)
    except (ValueError, FileNotFoundError, KeyError, EnvironmentFault) as e:
        _fail(e)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    _VERBOSE[0] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def build(recipe: str = typer.Argument(..., help="avsync15 | landscape | vggss | demo | custom"),
          out: Path = OutOpt, workers: int = WorkersOpt, address: Optional[str] = AddressOpt,
          gpus: Optional[float] = GpusOpt, sources: Optional[Path] = typer.Option(None, help="sources file (VGGSound CSV, AVSync15 list, generic CSV/Parquet)"),
          limit: Optional[int] = typer.Option(None, help="use only the first N accepted sources"),
          config: Optional[Path] = typer.Option(None, help="JSON recipe overrides (recipe 'custom')"),
          clip_checkpoint: Optional[str] = typer.Option(None, help="local open_clip checkpoint"),
          imagebind_checkpoint: Optional[str] = typer.Option(None, envvar="CURATE_IMAGEBIND_CKPT", help="imagebind_huge.pth (CC BY-NC 4.0 weights)"),
          sync_checkpoint: Optional[str] = typer.Option(None, envvar="CURATE_SYNC_CKPT", help="sync classifier checkpoint"),
          sync_convention: Optional[str] = typer.Option(None, help="sync preprocessing: released | ours (default: the weights')"),
          speech_checkpoint: Optional[str] = typer.Option(None, help="Silero VAD 16-kHz safetensors for the speech filter (default: the one the silero-vad package ships, MIT)"),
          weights: Optional[List[str]] = typer.Option(None, "--weights", help="MODEL=PATH, weights of any filter's model (e.g. sync=sync.pt)"),
          synchformer_checkpoint: Optional[str] = typer.Option(None, envvar="CURATE_SYNCHFORMER_CKPT", help="Synchformer weights (the authors' 24-01-04T16-39-21.pt or MMAudio's synchformer_state_dict.pth): certify stage"),
          allow_random_weights: bool = typer.Option(False, help="demos/tests only: random models, scored but not gating"),
          repair: bool = typer.Option(False, "--repair", help="repair constant audio offsets instead of dropping the clips (recipe option repair; needs --synchformer-checkpoint)"),
          cookies: Optional[List[str]] = CookiesOpt,
          yt_extractor_args: Optional[List[str]] = ExtractorArgsOpt,
          js_runtime: Optional[str] = JsRuntimeOpt,
          proxy: Optional[str] = typer.Option(None, help="yt-dlp proxy"),
          rate_limit: Optional[str] = typer.Option(None, help="yt-dlp rate limit, e.g. 2M"),
          socket_timeout: Optional[float] = typer.Option(None, help="seconds without data before a download is a timeout (default 20)"),
          retry_failed: bool = typer.Option(False, help="download again sources that failed for a transient reason"),
          download_workers: Optional[int] = DownloadWorkersOpt,
          max_requests_per_s: Optional[float] = MaxRequestsOpt,
          trust_checkpoint: bool = TrustOpt,
          offline: bool = OfflineOpt,
          executor: str = ExecOpt) -> None:
    """Run a whole recipe (resumable: rerun to continue where it stopped). Weights not named
    by an option come from the cache (`curate models pull`)."""
    _trust(trust_checkpoint)
    _offline(offline)

    options = {"workers": workers, "clip_checkpoint": clip_checkpoint,
               "imagebind_checkpoint": imagebind_checkpoint, "sync_checkpoint": sync_checkpoint,
               "speech_checkpoint": speech_checkpoint,
               "allow_random_weights": allow_random_weights or None,
               "proxy": proxy, "ratelimit": rate_limit, "download_workers": download_workers,
               "max_requests_per_s": max_requests_per_s, "socket_timeout": socket_timeout,
               "sync_convention": sync_convention, "synchformer_checkpoint": synchformer_checkpoint,
               "repair": repair or None}

    def body() -> None:
        from curate.config.models import parse_weights
        options.update(_yt_options(cookies, yt_extractor_args, js_runtime))
        options.update(parse_weights(weights))
        _doctor_first(recipe, out, {**options, "address": address}, config)
        _run_build(recipe, out, _executor(executor, workers, address, gpus), options,
                   sources=sources, limit=limit, config=config, retry_failed=retry_failed)
    _guarded(out, body)


def _run_build(recipe: str, out: Path, ex, options: dict, **kw) -> None:
    """The demo's build or a recipe's, then the run's stats."""
    from curate.build import build as run_build
    from curate.reports.stats import collect, format_text
    if recipe == "demo":
        from curate.demo.offline import build_demo
        build_demo(out, ex, options=options, echo=typer.echo)
    else:
        run_build(recipe, out, ex, options=options, echo=typer.echo, **kw)
    typer.echo(format_text(collect(out)))


def _stage(out: Path, stages: List[str], workers: int, address: Optional[str],
           gpus: Optional[float], executor: str, retry_failed: bool = False,
           options: Optional[dict] = None) -> None:
    from curate.build import run_stages
    from curate.config.run_state import load_run, record_run

    def body() -> None:
        run = load_run(out)
        record_run(out, run, {"options": {k: v for k, v in (options or {}).items() if v is not None}})
        run_stages(out, run, _executor(executor, workers, address, gpus), stages,
                   retry_failed=retry_failed, echo=typer.echo)
    _guarded(out, body)


@app.command()
def reproduce(lists: List[Path] = typer.Argument(..., help="AVSync15 list files (train.txt, test.txt)"),
              out: Path = OutOpt, workers: int = WorkersOpt, address: Optional[str] = AddressOpt,
              url_template: Optional[str] = typer.Option(None, help="URL for a YouTube id, e.g. https://host/{ytid}.mp4"),
              executor: str = ExecOpt) -> None:
    """Exact-reproduction mode: download and cut exactly the clips an AVSync15 list names."""
    from curate.build import reproduce as run_reproduce
    from curate.reports.stats import collect, format_text

    def body() -> None:
        run_reproduce(lists, out, _executor(executor, workers, address, None),
                      url_template=url_template, echo=typer.echo)
        typer.echo(format_text(collect(out)))
    _guarded(out, body)


@app.command()
def sources(recipe: str, out: Path = OutOpt, sources: Path = typer.Option(..., help="sources file"),
            limit: Optional[int] = None, config: Optional[Path] = None) -> None:
    """Read a sources file into <out>/manifests/sources.parquet (starts a run)."""
    from curate.build import stage_value
    from curate.config.run_state import new_run
    from curate.config.recipes import get_recipe

    def body() -> None:
        run = new_run(out, get_recipe(recipe, config), {})
        rows = stage_value("sources", out, run, sources=sources, limit=limit)
        typer.echo(f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} source rows accepted")
    _guarded(out, body)


@app.command()
def download(out: Path = typer.Argument(...), workers: int = WorkersOpt,
             address: Optional[str] = AddressOpt, executor: str = ExecOpt,
             retry_failed: bool = typer.Option(False, help="try again sources that failed for a transient reason (timeout, 5xx, broken transfer)"),
             download_workers: Optional[int] = DownloadWorkersOpt,
             max_requests_per_s: Optional[float] = MaxRequestsOpt,
             cookies: Optional[List[str]] = CookiesOpt,
             yt_extractor_args: Optional[List[str]] = ExtractorArgsOpt,
             js_runtime: Optional[str] = JsRuntimeOpt) -> None:
    """Download every accepted source (yt-dlp); skips what is already there."""
    try:
        yt = _yt_options(cookies, yt_extractor_args, js_runtime)
    except ValueError as e:
        _fail(e)
    _stage(out, ["download"], workers, address, None, executor, retry_failed=retry_failed,
           options={"download_workers": download_workers, "max_requests_per_s": max_requests_per_s, **yt})


@app.command()
def split(out: Path = typer.Argument(...), workers: int = WorkersOpt,
          address: Optional[str] = AddressOpt, executor: str = ExecOpt) -> None:
    """Shot detection (PySceneDetect) and 3-s windows inside each shot."""
    _stage(out, ["split"], workers, address, None, executor)


@app.command()
def score(out: Path = typer.Argument(...), workers: int = WorkersOpt,
          address: Optional[str] = AddressOpt, gpus: Optional[float] = GpusOpt,
          executor: str = ExecOpt) -> None:
    """Score windows: unscored ones, and exactly those a looser selection needs."""
    from curate.build import check_run_weights, stage_value
    from curate.config.run_state import load_run

    def body() -> None:
        run = load_run(out)
        try:
            check_run_weights(out, run)
        except ValueError as e:   # score has no weight options: say where they come from
            raise ValueError(f"{e}; `curate score` uses the weights that `curate build` "
                             f"recorded in {out / 'run.json'}") from e
        ex = _executor(executor, workers, address, gpus)
        stage_value("score", out, run, ex)                  # the windows not scored yet
        stage_value("score", out, run, ex, rescore=True)    # exactly those a looser selection needs
    _guarded(out, body)


@app.command()
def select(out: Path = typer.Argument(...),
           set_: Optional[List[str]] = typer.Option(None, "--set", help="threshold override, e.g. clip_diff.max=0.6"),
           decisions: Optional[Path] = typer.Option(None, help="review decisions JSON (curate review)")) -> None:
    """Apply thresholds to stored scores, merge, balance and split. Touches no model."""
    from curate.build import stage_value
    from curate.config.run_state import load_run
    box: dict = {}

    def body() -> None:
        run = load_run(out)
        box["summary"] = stage_value("select", out, run, overrides=set_, decisions_file=decisions)
    _guarded(out, body)
    summary = box["summary"]
    for line in summary.get("inert", ()):
        typer.echo(line)
    if summary.get("needs_scoring"):
        typer.echo(f"{summary['needs_scoring']} windows were never scored under these thresholds: "
                   f"run `curate score {out}` to score exactly those")
    from curate.stages.select import desync_note
    note = desync_note(summary)
    if note:
        typer.echo(note)
    if summary.get("funnel"):
        from curate.selection.rules import format_funnel
        typer.echo(format_funnel(summary["funnel"]))


@app.command()
def merge(out: Path = typer.Argument(...)) -> None:
    """Re-run merge, balance and split from the stored decisions (same as select)."""
    select(out, None, None)


@app.command()
def shard(out: Path = typer.Argument(...), workers: int = WorkersOpt,
          address: Optional[str] = AddressOpt, executor: str = ExecOpt) -> None:
    """Cut the selected clips and write WebDataset shards, then verify them."""
    _stage(out, ["shard"], workers, address, None, executor)


@app.command()
def verify(out: Path = typer.Argument(..., help="run directory or shards directory")) -> None:
    """Check the output against the manifests (every selected clip in exactly one shard, every
    listed shard with its index, no extra or temp files) and every shard against its index."""
    from shards.verify import format_report, verify_path
    report = verify_path(out)
    typer.echo(format_report(report))
    if not report["ok"]:
        raise typer.Exit(1)


@app.command("export-folder")
def export_folder(
        out: Path = typer.Argument(..., help="run directory"),
        dest: Path = typer.Argument(..., help="dataset folder to write (e.g. ASVA/datasets/AVSync15)"),
        text_encoder: Optional[Path] = typer.Option(
            None, "--text-encoder", help="local SD-1.5 text encoder for the prompt encodings: the "
            "stable-diffusion-v1-5 folder, its text_encoder/ folder (needs transformers), or an "
            "open_clip ViT-L-14 checkpoint"),
        text_encodings_only: bool = typer.Option(
            False, "--text-encodings-only", help="only (re)write the text encodings of an "
            "existing export, from its class_mapping.json"),
        link: bool = typer.Option(False, "--link", help="hard-link the clips instead of copying"),
) -> None:
    """Write the paper's dataset layout (lzhangbj/ASVA README): videos/, train.txt, test.txt,
    class_mapping.json and, with --text-encoder, the CLIP text encodings its trainer reads."""
    from curate.reports.export import export_run, export_text_encodings
    from curate.reports.export_text import TextEncoderError
    try:
        if text_encodings_only:
            if text_encoder is None:
                raise ValueError("--text-encodings-only needs --text-encoder PATH")
            for path in export_text_encodings(dest, text_encoder).values():
                typer.echo(f"wrote {path}")
            return
        res = export_run(out, dest, link=link, text_encoder=text_encoder)
    except (FileNotFoundError, TextEncoderError, ValueError) as e:
        _fail(e)
    typer.echo(f"exported {res.n_clips} clips ({res.n_train} train, {res.n_test} test) to {dest} "
               f"(layout {res.layout})")
    typer.echo(f"text encodings: {res.text_encodings}")
    if res.sync_dropped:
        typer.echo(f"warning: {len(res.sync_dropped)} of {res.n_clips} clips would be silently "
                   "replaced by the released sync classifier's dataset (avsync/data.py):")
        for w in res.sync_dropped:
            typer.echo(f"  {w['split']}/{w['line']}: {', '.join(w['reasons'])}")
    if res.gen_short:
        typer.echo(f"warning: {len(res.gen_short)} clips are shorter than the 2-s generation "
                   "window (the released dataset repeats their last frame)")


@app.command()
def stats(out: Path = typer.Argument(...), as_json: bool = typer.Option(False, "--json"),
          html: Optional[Path] = typer.Option(None, help="write an HTML report with score histograms"),
          against: Optional[List[Path]] = typer.Option(None, "--against", help="a published list "
                                                       "(train.txt / test.txt / CSV): which of its clips "
                                                       "this run reproduced, which not and why; repeatable")) -> None:
    """Funnel, per-class counts, failures by reason."""
    from curate.reports.stats import collect, format_text
    if against:
        from curate.reports.ledger import against as run_against, format_against
        try:
            rep = run_against(out, against)
        except (ValueError, FileNotFoundError) as e:
            _fail(e)
        typer.echo(json.dumps(rep, indent=2, default=str) if as_json else format_against(rep))
        return
    try:
        st = collect(out)
    except FileNotFoundError as e:
        _fail(e)
    if html:
        from curate.reports.stats import write_report
        write_report(out, html, st)
    typer.echo(json.dumps(st, indent=2, default=str) if as_json else format_text(st))


@app.command()
def diff(run_a: Path = typer.Argument(..., help="run directory A"),
         run_b: Path = typer.Argument(..., help="run directory B"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Sources and clips that differ between two runs, by reason (from their ledgers)."""
    from curate.reports.ledger import diff_runs, format_diff
    try:
        d = diff_runs(run_a, run_b)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(json.dumps(d, indent=2, default=str) if as_json else format_diff(d))


@app.command()
def synth(out: Path = typer.Argument(...), n: int = 32, seed: int = 0) -> None:
    """Generate a labelled corpus with recorded truth (for the demo and tests)."""
    from curate.demo.synth import synthesize
    synthesize(out, n_videos=n, seed=seed)
    typer.echo(f"wrote {n} videos, truth.json and sources.csv under {out}")


@app.command()
def review(out: Path = typer.Argument(...), decisions: Path = typer.Option(None, help="where decisions are saved"),
           port: int = 0, write: Optional[Path] = typer.Option(None, help="write a static page instead of serving")) -> None:
    """Review page for the manual pass: keep/reject selected clips (loopback only)."""
    from curate.reports.review import serve_review, write_review_page
    decisions = decisions or out / "review_decisions.json"
    if write:
        write_review_page(out, write, decisions)
        typer.echo(f"wrote {write}")
    else:
        server = serve_review(out, decisions, port=port, block=False)
        typer.echo(f"review page: {server.url}  (decisions saved to {decisions}; Ctrl-C to stop)")
        try:
            import time
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.close()


@sync_app.command("train")
def sync_train(data: Optional[Path] = typer.Option(None, help="folder of videos, a run directory or a manifest; none: generated events"),
               out: Path = typer.Option(..., "--out", help="checkpoint folder"),
               init: Optional[Path] = typer.Option(None, help="start from: our checkpoint, the released modules/ folder, "
                                                              "or the AVID-CMA checkpoint (both encoders; head fresh); "
                                                              "a weights name (avid-cma-audioset) reads the cache"),
               steps: int = typer.Option(40000, help="iterations"), batch_size: int = 32,
               lr: float = 2e-4, small: bool = typer.Option(False, help="small configuration (CPU)"),
               accum_steps: int = typer.Option(1, help="micro-batches per step (batch 32 x 21 clips on one GPU: 4-8)"),
               warmup_steps: int = typer.Option(0, help="stage 1: steps with easy negatives (other instances) first"),
               amp: str = typer.Option("auto", help="auto (bf16/fp16 on CUDA, off on CPU) | bf16 | fp16 | off"),
               max_minutes: Optional[float] = typer.Option(None, help="stop (with a checkpoint) after this wall time"),
               convention: Optional[str] = typer.Option(None, help="preprocessing: released | ours (default: the init's, else ours)"),
               val_data: Optional[Path] = typer.Option(None, help="validation videos (released convention: 21 clips placed uniformly, as the authors' test set)"),
               val_every: int = typer.Option(2500, help="steps between validations (and at the end)"),
               seed: int = 0, trust_checkpoint: bool = TrustOpt) -> None:
    """Train the sync classifier (contrastive, hard negatives; resumes from <out>; DDP under torchrun)."""
    from sync_classifier.train import train
    _trust(trust_checkpoint)
    for opt, path in (("--data", data), ("--val-data", val_data)):
        if path is not None and not path.exists():
            _fail(FileNotFoundError(f"{opt} {path} does not exist"))
    try:
        from curate.config.models import command_weights
        init = Path(command_weights("avid-cma", init, "--init")) if init is not None else None
        ckpt = train(data=data, out=out, init=init, steps=steps, batch_size=batch_size, lr=lr,
                     small=small, max_minutes=max_minutes, seed=seed, accum_steps=accum_steps,
                     warmup_steps=warmup_steps, amp=amp, convention=convention,
                     val_data=val_data, val_every=val_every)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(f"checkpoint: {ckpt}")


@sync_app.command("eval")
def sync_eval(ckpt: Path = typer.Option(...),
              data: Optional[Path] = typer.Option(None, help="videos to evaluate on; none: held-out generated events"),
              protocol: Optional[str] = typer.Option(None, help="released (centre anchor, the paper's) | all-anchors "
                                                                "(default: the weights' convention)"),
              convention: Optional[str] = typer.Option(None, help="preprocessing: released | ours (default: the weights')"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """31 offsets of 0.04 s over [-0.6, 0.6]; a2v / v2a accuracy within +-5 offsets."""
    from sync_classifier.evaluate import evaluate
    try:
        res = evaluate(ckpt=ckpt, data=data, protocol=protocol, convention=convention)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    if as_json or res.get("a2v") is None:
        typer.echo(json.dumps(res, indent=2))
        return
    other = [p for p in res["protocols"] if p != res["protocol"]][0]
    o = res["protocols"][other]
    typer.echo(f"sync eval: protocol {res['protocol']}, {res['convention']} convention, "
               f"{res['n_videos']} videos (skipped {len(res['skipped'])})")
    typer.echo(f"a2v {100 * res['a2v']:.2f}%  v2a {100 * res['v2a']:.2f}%  (chance {100 * res['chance']:.2f}%)")
    typer.echo(f"{other}: a2v {100 * o['a2v']:.2f}%  v2a {100 * o['v2a']:.2f}%  (chance {100 * o['chance']:.2f}%)")


@app.command()
def metrics(generated: Path = typer.Option(..., help="folder of generated videos"),
            reference: Path = typer.Option(..., help="folder of ground-truth videos, same names"),
            sync_checkpoint: Optional[Path] = typer.Option(None, envvar="CURATE_SYNC_CKPT",
                                                           help="sync checkpoint file or the released modules/ folder "
                                                                "(default: the weights cache's avsync-classifier)"),
            imagebind_checkpoint: Optional[Path] = typer.Option(None, envvar="CURATE_IMAGEBIND_CKPT"),
            protocol: Optional[str] = typer.Option(None, help="released (the paper's tables) | ours "
                                                              "(default: the sync weights' convention)"),
            image_size: int = typer.Option(256, help="released protocol: the generation resolution frames are resized to"),
            synchformer_checkpoint: Optional[Path] = typer.Option(None, envvar="CURATE_SYNCHFORMER_CKPT",
                                                                  help="adds DeSync (MMAudio's av-benchmark protocol)"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Score generated videos against ground truth (IA, IT, RelSync, AlignSync; DeSync with
    Synchformer's weights). A weights option left out is taken from the weights cache
    (`curate models pull NAME`); an option may also name a cached row."""
    from curate.config.models import command_weights
    from curate.config.weights import for_model, missing_fix
    from curate.reports.gen_metrics import desync_metric, run_metrics, with_desync
    try:
        sync = command_weights("sync", sync_checkpoint, "--sync-checkpoint")
        if sync is None:
            raise ValueError(f"curate metrics needs the sync classifier: {missing_fix(for_model('sync'))}")
        imagebind = command_weights("imagebind", imagebind_checkpoint, "--imagebind-checkpoint")
        sf = command_weights("synchformer", synchformer_checkpoint, "--synchformer-checkpoint")
        text = run_metrics(generated, reference, sync, imagebind, as_json=as_json,
                           protocol=protocol, image_size=image_size)
        if sf:
            text = with_desync(text, desync_metric(generated, reference, sf), as_json)
        typer.echo(text)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)


@app.command()
def doctor(recipe: Optional[str] = typer.Argument(None, help="avsync15 | landscape | vggss | demo | custom"),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory (free disk)"),
           config: Optional[Path] = typer.Option(None, help="JSON recipe overrides (recipe 'custom')"),
           address: Optional[str] = AddressOpt, cookies: Optional[List[str]] = typer.Option(
               None, "--cookies", help="cookies files to check"),
           js_runtime: Optional[str] = JsRuntimeOpt, offline: bool = OfflineOpt,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """What a run of RECIPE needs and what this machine has (exit 0: it can run, 1: not)."""
    from curate.ops.ytopts import parse_js_runtime
    from curate.reports.doctor import as_json as rows_json, can_run, format_rows, run_checks
    _offline(offline)
    try:
        opts = {"cookiefile": cookies, "js_runtimes": parse_js_runtime(js_runtime), "address": address}
        rows = run_checks(recipe, out, opts, config)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(json.dumps(rows_json(rows, recipe), indent=2) if as_json else format_rows(rows))
    if not can_run(rows):
        raise typer.Exit(1)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every weight file the recipes use (source, size, checksum, licence, option) and
    whether the cache ($CURATE_HOME, default ~/.cache/curate) holds it."""
    from curate.reports.doctor import format_models, models_table
    rows = models_table()
    typer.echo(json.dumps(rows, indent=2) if as_json else format_models(rows))


@models_app.command("pull")
def models_pull(names: Optional[List[str]] = typer.Argument(None, help="weights to pull (default: "
                                                             "all the recipes' filters use)"),
                base_url: Optional[str] = typer.Option(None, help="fetch the same file names from "
                                                       "this server instead (a mirror)"),
                offline: bool = OfflineOpt) -> None:
    """Download weights into the cache: resumable, size and checksum verified, the licence
    shown first; a file that cannot be fetched by URL prints its manual step."""
    from curate.config.weights import WEIGHTS, get_weight
    from curate.ops.pull import PullError, pull
    _offline(offline)
    try:
        rows = [get_weight(n) for n in names] if names else [w for w in WEIGHTS if w.model]
    except ValueError as e:
        _fail(e)
    failed = []
    for w in rows:
        try:
            pull(w, base_url=base_url, echo=typer.echo)
        except PullError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            failed.append(w.name)
    if failed:
        raise typer.Exit(1)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if not isinstance(e, (ValueError, OSError, EnvironmentFault)):
        first = f"{type(e).__name__}: {first}"
    return first if len(first) <= 500 else first[:500] + "..."


def main() -> None:
    """The command line; a failure no command turned into its own message is one line
    (``error: ...``, exit 2), its traceback only with ``-v``."""
    try:
        app()
    except Exception as e:  # noqa: BLE001 - the last word on any bad file or option
        if "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:]:
            raise
        typer.secho(f"error: {_one_line(e)}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
