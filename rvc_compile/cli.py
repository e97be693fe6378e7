"""The ``rvc-compile`` command line: parse, call the Python API, map errors to exit codes.

User errors (``RvcCompileError``) print one line on stderr, no traceback, and exit 2; a failed gate
exits 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .errors import RvcCompileError, is_storage_error, storage_error_message


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RvcCompileError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            # A full disk or read-only folder is the user's to fix, like any user error (ArtifactWriter and
            # the cache already say so for builds; this covers every other write: infer's output, pack...).
            click.echo(f"error: {storage_error_message(exc)}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rvc-compile")
def cli() -> None:
    """Compile trained RVC voice models into fast, verified inference artifacts."""


def main() -> None:
    cli(prog_name="rvc-compile")


@cli.command()
@click.argument("checkpoint", metavar="CKPT|ARTIFACT", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="RVC config json (training checkpoints).")
@click.option("--sample-rate", type=click.Choice(["32k", "40k", "48k"]), help="Sample rate of a training checkpoint, if its shapes are ambiguous.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(checkpoint: Path, config_path: Path | None, sample_rate: str | None, as_json: bool) -> None:
    """Describe an RVC checkpoint (version, rate, config, parameters, cost), an rmvpe.pt or a content encoder
    folder, or an artifact or pipeline bundle (target, CPU class it was built and verified for); all with
    this machine's CPU class."""
    from .inspect import describe_source, format_description

    description = describe_source(checkpoint, config_path=config_path, sample_rate=sample_rate)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--features", "features_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Content features .npy [T, C] at 100 frames/s.")
@click.option("--f0", "f0_path", type=click.Path(dir_okay=False, path_type=Path), help="Pitch .npy [T] in Hz, 0 = unvoiced (pitch models).")
@click.option("--speaker", default=0, show_default=True, type=int)
@click.option("--noise", default="zero", show_default=True, help="'zero' (deterministic) or 'seed:N'.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="RVC config json (training checkpoints).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="OUT.wav or OUT.npy")
def infer(source: Path, features_path: Path, f0_path: Path | None, speaker: int, noise: str, config_path: Path | None, output: Path) -> None:
    """Run SOURCE (a checkpoint or a compiled artifact) on features and f0; write audio."""
    from .runtime.audio import write_audio
    from .errors import InputError
    from .components.synthesizer.inputs import load_array, parse_noise
    from .sources import open_source

    noise = parse_noise(noise)
    if output.suffix.lower() not in (".wav", ".npy"):
        raise InputError(f"{output}: output must end in .wav or .npy")
    model = open_source(source, config_path=config_path)
    features = load_array(features_path, "features")
    f0 = load_array(f0_path, "f0") if f0_path is not None else None
    if f0 is not None and not model.has_f0:
        click.echo(f"note: {source} has no pitch input; --f0 is ignored", err=True)
        f0 = None
    labels = {"features": str(features_path), "f0": str(f0_path)}
    audio = model.infer(features, f0, speaker=speaker, noise=noise, labels=labels)
    write_audio(output, audio, model.sample_rate)
    click.echo(f"wrote {output} ({audio.shape[0] / model.sample_rate:.2f} s at {model.sample_rate} Hz)")


@cli.command()
@click.argument("voice", type=click.Path(path_type=Path))
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="OUT.wav, OUT.flac or OUT.npy")
@click.option("--pitch", "pitch_shift", type=float, help="Pitch shift in semitones (default: the bundle's setting, else 0).")
@click.option("--f0-method", type=click.Choice(["rmvpe", "harvest", "pm", "dio"]), help="Pitch estimator (default: the bundle's, else rmvpe when given, else harvest).")
@click.option("--index", "index_path", type=click.Path(dir_okay=False, path_type=Path), help="The voice's RVC .index (replaces a bundle's).")
@click.option("--index-rate", type=float, help="Retrieval blend 0..1 (default: the bundle's, else 0.75).")
@click.option("--protect", type=float, help="Protect unvoiced consonants 0..0.5 (0.5: off; default 0.33).")
@click.option("--rms-mix", "rms_mix_rate", type=float, help="Loudness: 1 the output's own, 0 the input's envelope (default 0.25).")
@click.option("--filter-radius", type=int, help="harvest: median filter the f0 when >= 3 (default 3).")
@click.option("--speaker", type=int, help="Speaker id of multi-speaker voices (default 0).")
@click.option("--noise", default="seed:0", show_default=True, help="'seed:N' (RVC's random prior and source noise) or 'zero' (deterministic).")
@click.option("--encoder", "encoder_path", type=click.Path(path_type=Path), help="Content encoder: an artifact, or a Transformers folder (with a checkpoint VOICE).")
@click.option("--rmvpe", "rmvpe_path", type=click.Path(path_type=Path), help="RMVPE: an artifact, or rmvpe.pt (with a checkpoint VOICE).")
@click.option("--threads", type=int, help="Threads per component (default: as recorded in each artifact).")
def convert(voice: Path, input_path: Path, output: Path, pitch_shift: float | None, f0_method: str | None, index_path: Path | None,
            index_rate: float | None, protect: float | None, rms_mix_rate: float | None, filter_radius: int | None, speaker: int | None,
            noise: str, encoder_path: Path | None, rmvpe_path: Path | None, threads: int | None) -> None:
    """Convert speech in IN (any format soundfile reads, any rate, mono or stereo) with VOICE.

    VOICE is a pipeline bundle, a synthesizer artifact (with --encoder and optionally --rmvpe artifacts),
    or an RVC checkpoint (the eager fp32 reference, with --encoder FOLDER and optionally --rmvpe rmvpe.pt).
    """
    from .components.synthesizer.inputs import parse_noise
    from .convert.audio import read_audio, write_audio
    from .convert.voice import open_voice

    noise = parse_noise(noise)
    if output.suffix.lower() not in (".wav", ".flac", ".npy"):
        from .errors import InputError

        raise InputError(f"{output}: output must end in .wav, .flac or .npy")
    audio, rate = read_audio(input_path)
    opened = open_voice(voice, encoder=encoder_path, rmvpe=rmvpe_path, index=index_path, threads=threads)
    options = opened.options(f0_method=f0_method, pitch_shift=pitch_shift, index_rate=index_rate, protect=protect,
                             rms_mix_rate=rms_mix_rate, filter_radius=filter_radius, speaker=speaker)
    seconds = audio.shape[0] / rate

    def progress(done: int, total: int) -> None:
        if total > 1:
            click.echo(f"segment {done}/{total}", err=True)

    timings: dict[str, float] = {}
    converted = opened.convert(audio, rate, options, noise=noise, progress=progress, timings=timings, label=str(input_path))
    write_audio(output, converted, opened.sample_rate)
    spent = sum(timings.values())
    parts = ", ".join(f"{name} {value:.2f} s" for name, value in timings.items())
    click.echo(f"{opened.label}: {seconds:.2f} s of audio in {spent:.2f} s ({parts})", err=True)
    click.echo(f"wrote {output} ({converted.shape[0] / opened.sample_rate:.2f} s at {opened.sample_rate} Hz)")


@cli.command()
@click.argument("voice", type=click.Path(path_type=Path))
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="OUT.wav, OUT.flac or OUT.npy")
@click.option("--block", type=float, help="Seconds per block (default: a block artifact's, else 0.25).")
@click.option("--context", type=float, help="Seconds of context before each block (default: a block artifact's, else 1.0).")
@click.option("--crossfade", type=float, help="Seconds of SOLA crossfade between blocks (default: a block artifact's, else 0.05).")
@click.option("--synthesizer", "synthesizer_path", type=click.Path(path_type=Path), help="A real-time block artifact (recipe stream: section) to use instead of VOICE's synthesizer.")
@click.option("--synth-context", type=float, default=0.5, show_default=True, help="Dynamic synthesizers: seconds they see before the rendered frames.")
@click.option("--pitch", "pitch_shift", type=float, help="Pitch shift in semitones (default: the bundle's setting, else 0).")
@click.option("--f0-method", type=click.Choice(["rmvpe", "harvest", "pm", "dio"]), help="Pitch estimator (default: the bundle's, else rmvpe when given, else harvest).")
@click.option("--index", "index_path", type=click.Path(dir_okay=False, path_type=Path), help="The voice's RVC .index (replaces a bundle's).")
@click.option("--index-rate", type=float, help="Retrieval blend 0..1 (default: the bundle's with an index, else 0).")
@click.option("--speaker", type=int, help="Speaker id of multi-speaker voices (default 0).")
@click.option("--noise", default="seed:0", show_default=True, help="'seed:N' (RVC's random prior and source noise) or 'zero' (deterministic).")
@click.option("--encoder", "encoder_path", type=click.Path(path_type=Path), help="Content encoder: an artifact, or a Transformers folder (with a checkpoint VOICE).")
@click.option("--rmvpe", "rmvpe_path", type=click.Path(path_type=Path), help="RMVPE: an artifact, or rmvpe.pt (with a checkpoint VOICE).")
@click.option("--threads", type=int, help="Threads per component (default: as recorded in each artifact).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-block statistics as JSON.")
def stream(voice: Path, input_path: Path, output: Path, block: float | None, context: float | None, crossfade: float | None,
           synthesizer_path: Path | None, synth_context: float, pitch_shift: float | None, f0_method: str | None, index_path: Path | None,
           index_rate: float | None, speaker: int | None, noise: str, encoder_path: Path | None, rmvpe_path: Path | None,
           threads: int | None, as_json: bool) -> None:
    """Convert IN block by block through the real-time engine, as a voice changer runs it.

    VOICE is opened as by convert. Each block is converted in real-time order, with only the audio a live
    stream would have; OUT is the output aligned with IN (the crossfade lag removed). Reports the time
    per block against the block's own duration (docs/STREAMING.md).
    """
    from .components.synthesizer.inputs import parse_noise
    from .convert.audio import SAMPLE_RATE, read_audio, resample, write_audio
    from .convert.voice import open_stream
    from .errors import InputError
    from .runtime.stream import stream_audio

    noise = parse_noise(noise)
    if output.suffix.lower() not in (".wav", ".flac", ".npy"):
        raise InputError(f"{output}: output must end in .wav, .flac or .npy")
    audio, rate = read_audio(input_path)
    if rate % 100:  # a stream takes whole samples per 10 ms frame: 22.05 kHz and the like go to 16 kHz first
        audio, rate = resample(audio, rate, SAMPLE_RATE), SAMPLE_RATE
    engine = open_stream(voice, encoder=encoder_path, rmvpe=rmvpe_path, index=index_path, synthesizer=synthesizer_path, threads=threads,
                         block=block, context=context, crossfade=crossfade, synth_context=synth_context, sample_rate=rate,
                         f0_method=f0_method, pitch_shift=pitch_shift, index_rate=index_rate, speaker=speaker, noise=noise)
    click.echo(f"{engine.label}: {engine.geometry.describe()}; input {rate} Hz, output {engine.output_rate} Hz; "
               f"latency {engine.latency_s * 1000:.0f} ms + compute", err=True)
    converted = stream_audio(engine, audio)
    write_audio(output, converted, engine.output_rate)
    stats = engine.stats()  # every block: the stream warmed its engines up when it was made
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        stages = ", ".join(f"{name} {value:.1f}" for name, value in stats.get("stages_p50_ms", {}).items())
        click.echo(f"{stats['blocks']} blocks of {stats['block_s'] * 1000:.0f} ms: p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
                   f"max {stats['max_ms']:.1f} ms, {stats['over_budget'] * 100:.1f} % over the block's duration (p50 per stage, ms: {stages})", err=True)
    click.echo(f"wrote {output} ({converted.shape[0] / engine.output_rate:.2f} s at {engine.output_rate} Hz)")


_CACHE_DIR_HELP = "Build cache folder (default: $RVC_COMPILE_CACHE, else the user cache folder)."


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output root (default: the recipe's output_dir).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value (repeatable).")
@click.option("--force", is_flag=True, help="Overwrite an existing artifact version.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON (the artifact path stays the last line).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=_CACHE_DIR_HELP)
@click.option("--no-cache", is_flag=True, help="Build every stage afresh (a throwaway cache); the shared cache is neither read nor written.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Build the recipes on N worker processes (with Ray: at most N builds in flight); a failed recipe does not stop the others.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the worker processes run: this machine, or Ray tasks (pip install 'rvc-compile[ray]').")
@click.option("--ray-address", metavar="ADDRESS", help="The Ray cluster to join ('auto', or host:port; default: start a local Ray instance). Paths must be on storage every node shares.")
def build(recipes: tuple[Path, ...], out_dir: Path | None, overrides: tuple[str, ...], force: bool, as_json: bool, cache_dir: Path | None, no_cache: bool,
          jobs: int | None, executor: str, ray_address: str | None) -> None:
    """Build RECIPE.yaml into a verified artifact; prints the artifact path last.

    With several recipes (or --jobs, or --executor ray), every recipe is built in its own process, a
    result table goes to stderr and the artifact paths of those that succeeded are the last lines of
    stdout; the exit code is 0 if all succeeded, 2 if any failed on a user error, else 1.
    """
    from .recipe.pipeline import is_pipeline_recipe

    if ray_address is not None and executor != "ray":
        raise click.UsageError("--ray-address needs --executor ray")
    if len(recipes) == 1 and jobs is None and executor == "local":
        log = lambda message: click.echo(message, err=True)  # noqa: E731
        if is_pipeline_recipe(recipes[0]):  # kind: pipeline -> a conversion bundle (docs/CONVERT.md)
            from .build.bundle import build_pipeline
            from .recipe.pipeline import load_pipeline_recipe

            recipe = load_pipeline_recipe(recipes[0], list(overrides))
            result = build_pipeline(recipe, out_dir=out_dir, force=force, cache_dir=cache_dir, use_cache=not no_cache, log=log)
        else:
            from .build.pipeline import build as run_build
            from .recipe.schema import load_recipe

            recipe = load_recipe(recipes[0], list(overrides))
            result = run_build(recipe, out_dir=out_dir, force=force, cache_dir=cache_dir, use_cache=not no_cache, log=log)
        if as_json:
            click.echo(json.dumps(result.report, indent=2, default=str))
        click.echo(str(result.path))
        return

    pipelines = [str(path) for path in recipes if is_pipeline_recipe(path)]
    if pipelines:
        raise click.UsageError(f"pipeline recipes build one at a time (their components build in parallel stages already): {pipelines[0]}")
    from .build.batch import OK, build_recipes, exit_code, format_results

    def announce(result: Any) -> None:
        click.echo(f"{result.recipe}: {result.status}" + (f" ({result.error})" if result.error else ""), err=True)

    if jobs is None and executor == "ray":  # a cluster schedules them all; a local instance, one per core
        jobs = len(recipes) if ray_address else min(len(recipes), os.cpu_count() or 1)
    results = build_recipes(list(recipes), jobs=jobs or 1, out_dir=out_dir, overrides=overrides, force=force, cache_dir=cache_dir,
                            use_cache=not no_cache, on_result=announce, executor=executor, address=ray_address)
    click.echo(format_results(results), err=True)
    if as_json:
        click.echo(json.dumps([result.to_dict() for result in results], indent=2, default=str))
    for result in results:
        if result.status == OK:
            click.echo(str(result.path))
    code = exit_code(results)
    if code:
        sys.exit(code)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--skip-latency", is_flag=True, help="Check integrity and accuracy only.")
@click.option("--threads", type=int, help="Threads for the backend (default: as recorded in the artifact).")
def verify(artifact: Path, as_json: bool, skip_latency: bool, threads: int | None) -> None:
    """Re-hash, load and run ARTIFACT's golden set; exit 0 pass, 1 a gate failed, 2 unusable.

    A pipeline bundle is verified whole: its integrity, each component, then the pipeline end to end."""
    from .artifact.manifest import BUNDLE_KIND, read_manifest
    from .verify.gates import format_result, verify_artifact

    if read_manifest(artifact).get("kind") == BUNDLE_KIND:
        from .verify.bundle import format_bundle_result, verify_bundle

        format_result = format_bundle_result  # noqa: F811
        result = verify_bundle(artifact, skip_latency=skip_latency, threads=threads)
    else:
        result = verify_artifact(artifact, skip_latency=skip_latency, threads=threads)
    click.echo(json.dumps(result, indent=2, default=str) if as_json else format_result(result))
    if not result["passed"]:
        sys.exit(1)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The archive to write (FILE.tar.gz).")
def pack(artifact: Path, output: Path) -> None:
    """Pack an intact ARTIFACT into a reproducible .tar.gz; prints its path last."""
    from .cache.store import format_size
    from .artifact.pack import pack as run_pack

    packed = run_pack(artifact, output)
    click.echo(f"packed {packed.name} {packed.version}: {packed.files} files, {format_size(packed.size)}, sha256 {packed.sha256}", err=True)
    click.echo(str(packed.path))


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--profile", required=True, metavar="vc-client|rvc-onnx",
              help="The app to load the file: vc-client (w-okada VC Client) or rvc-onnx (RVC WebUI's OnnxRVC).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The ONNX file to write (VOICE.onnx); its record goes to VOICE.onnx.json.")
@click.option("--noise", default="graph", show_default=True, metavar="graph|inputs",
              help="graph: the noise is drawn inside the graph, as the apps expect. inputs: the draws are extra inputs "
                   "(prior_noise, source_noise), a deterministic file for checking that the apps cannot feed.")
@click.option("--threads", type=int, help="Threads for the verification runs (default: as recorded in the artifact).")
def export(artifact: Path, profile: str, output: Path, noise: str, threads: int | None) -> None:
    """Export an ONNX Runtime ARTIFACT as one ONNX file an app loads unchanged; prints its path last.

    The file is verified before it is written (the artifact's golden cases against its fp32 reference and
    three lengths against its runtime, within its accuracy budget): exit 1 if that fails, 2 if the
    artifact cannot be exported in this profile. docs/EXPORT.md.
    """
    from .export import export_artifact

    result = export_artifact(artifact, profile, output, noise=noise, threads=threads, log=lambda message: click.echo(message, err=True))
    click.echo(str(result.path))


@cli.command()
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", default=Path("."), show_default=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to unpack into: the artifact lands in OUTPUT/<name>/<version>.")
@click.option("--force", is_flag=True, help="Replace an existing artifact version.")
def unpack(archive: Path, out_dir: Path, force: bool) -> None:
    """Unpack an artifact ARCHIVE, checking every file's hash; prints the artifact path last."""
    from .artifact.pack import unpack as run_unpack

    click.echo(str(run_unpack(archive, out_dir, force=force)))


@cli.group()
def cache() -> None:
    """Inspect and trim the build cache: stage outputs, calibration sets and compiled blobs."""


def _cache_dir_option(function: Any) -> Any:
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=_CACHE_DIR_HELP)(function)


@cache.command("dir")
@_cache_dir_option
def cache_dir_command(cache_dir: Path | None) -> None:
    """Print the cache folder in use."""
    from .cache.store import resolve_cache_dir

    click.echo(str(resolve_cache_dir(cache_dir)))


@cache.command("ls")
@_cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable, with each entry's kind and key ingredients.")
def cache_ls(cache_dir: Path | None, as_json: bool) -> None:
    """List entries (key, stage, size, age, last use) and folders a tool fills (compiled blobs)."""
    from .cache.store import Store, format_ls

    store = Store.open(cache_dir)
    entries = store.ls()
    click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2) if as_json else format_ls(entries, store.root))


@cache.command("du")
@_cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def cache_du(cache_dir: Path | None, as_json: bool) -> None:
    """Disk use, in total and per stage."""
    from .cache.store import Store, format_du

    usage = Store.open(cache_dir).du()
    click.echo(json.dumps(usage, indent=2) if as_json else format_du(usage))


@cache.command("prune")
@_cache_dir_option
@click.option("--max-size", metavar="SIZE", help="Remove least recently used entries until the cache is at most SIZE (500M, 2G).")
@click.option("--older-than", metavar="AGE", help="Remove entries not used for AGE (12h, 7d, 2w).")
def cache_prune(cache_dir: Path | None, max_size: str | None, older_than: str | None) -> None:
    """Remove old or least recently used entries and folders; entries a running build uses are kept."""
    from .cache.store import Store, format_prune, parse_age, parse_size

    if max_size is None and older_than is None:
        raise click.UsageError("give --max-size and/or --older-than (or use 'cache clear')")
    limit = parse_size(max_size) if max_size is not None else None
    age = parse_age(older_than) if older_than is not None else None
    click.echo(format_prune(Store.open(cache_dir).prune(max_size=limit, older_than=age)))


@cache.command("clear")
@_cache_dir_option
def cache_clear(cache_dir: Path | None) -> None:
    """Remove every entry and folder (except entries a running build uses)."""
    from .cache.store import Store, format_prune

    click.echo(format_prune(Store.open(cache_dir).clear()))


def _seconds_list(text: str) -> tuple[float, ...]:
    from .errors import InputError

    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--seconds: {text!r} is not a comma-separated list of seconds (e.g. 0.5,2,10)") from None
    if not values or any(not v > 0 for v in values):
        raise InputError(f"--seconds: {text!r} must list positive lengths in seconds")
    return values


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--seconds", "seconds_text", default="0.5,2,10", show_default=True, help="Audio lengths to time, comma-separated.")
@click.option("--chunk", "chunk_seconds", type=float, help="Streaming mode: time consecutive chunks of this many seconds instead.")
@click.option("--stream-seconds", type=float, help="Audio per pass in --chunk mode (default 2) and --stream mode (default 10).")
@click.option("--stream", "stream_mode", is_flag=True, help="Time the real-time engine block by block; SOURCEs are VOICEs as for `rvc-compile stream`.")
@click.option("--block", type=float, help="--stream: seconds per block (default: a block artifact's, else 0.25).")
@click.option("--context", type=float, help="--stream: seconds of context (default: a block artifact's, else 1.0).")
@click.option("--crossfade", type=float, help="--stream: seconds of crossfade (default: a block artifact's, else 0.05).")
@click.option("--encoder", "encoder_path", type=click.Path(path_type=Path), help="--stream: the content encoder, as for stream.")
@click.option("--rmvpe", "rmvpe_path", type=click.Path(path_type=Path), help="--stream: RMVPE, as for stream.")
@click.option("--synthesizer", "synthesizer_path", type=click.Path(path_type=Path), help="--stream: a real-time block artifact, as for stream.")
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--repeat", default=10, show_default=True, type=int, help="Timed runs per length up to 2 s (fewer, at least 3, for longer lengths).")
@click.option("--warmup", default=1, show_default=True, type=int, help="Untimed runs per source and length first.")
@click.option("--speaker", type=int, help="Speaker id (default: the one artifacts are built for, else 0).")
@click.option("--no-floor", is_flag=True, help="Skip measuring the machine's peak fp32/bf16/int8 rates.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of the table.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON result to this file.")
def bench(sources: tuple[str, ...], seconds_text: str, chunk_seconds: float | None, stream_seconds: float | None, stream_mode: bool,
          block: float | None, context: float | None, crossfade: float | None, encoder_path: Path | None, rmvpe_path: Path | None,
          synthesizer_path: Path | None, threads: int, repeat: int, warmup: int, speaker: int | None, no_floor: bool, as_json: bool,
          output: Path | None) -> None:
    """Time SOURCEs on identical inputs, interleaved: checkpoints, artifacts, eager-bf16:CKPT, naive-onnx:CKPT.

    A checkpoint runs the eager fp32 PyTorch reference; the first SOURCE is the speed-up baseline.
    --chunk times independent chunks of the graph alone; --stream times the real-time engine (context,
    pitch cache, SOLA) per block, the way a voice changer calls it.
    """
    from .measure.bench import BenchSettings, format_table, run_bench, write_json

    if stream_mode:
        from .errors import InputError
        from .measure.streaming import StreamBenchSettings, format_stream_table, run_stream_bench

        if chunk_seconds is not None:
            raise InputError("--stream and --chunk are two modes: give one")
        stream_settings = StreamBenchSettings(
            seconds=stream_seconds or 10.0, repeat=repeat if repeat != 10 else 2, threads=threads, block=block, context=context,
            crossfade=crossfade, encoder=encoder_path, rmvpe=rmvpe_path, synthesizer=synthesizer_path,
        )
        result = run_stream_bench(list(sources), stream_settings, log=lambda message: click.echo(message, err=True))
        if output is not None:
            write_json(result, output)
        click.echo(json.dumps(result, indent=2, allow_nan=False) if as_json else format_stream_table(result))
        return
    settings = BenchSettings(
        seconds=_seconds_list(seconds_text), chunk_seconds=chunk_seconds, stream_seconds=stream_seconds or 2.0, threads=threads,
        repeat=repeat, warmup=warmup, speaker=speaker, floor=not no_floor,
    )
    result = run_bench(list(sources), settings, log=lambda message: click.echo(message, err=True))
    if output is not None:
        write_json(result, output)
    click.echo(json.dumps(result, indent=2, allow_nan=False) if as_json else format_table(result))


@cli.group()
def recipe() -> None:
    """Recipe tools."""


@recipe.command("schema")
@click.option("--prune", "prune_schema", is_flag=True, help="The prune recipe's schema (rvc-compile prune) instead of the build recipe's.")
def recipe_schema(prune_schema: bool) -> None:
    """Print the recipe's JSON Schema (for editors)."""
    if prune_schema:
        from .compress.prune_recipe import prune_recipe_json_schema

        click.echo(json.dumps(prune_recipe_json_schema(), indent=2))
        return
    from .recipe.schema import recipe_json_schema

    click.echo(json.dumps(recipe_json_schema(), indent=2))


@cli.group()
def calibration() -> None:
    """Calibration data for int8 quantization."""


@calibration.command("inspect")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value (repeatable).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Read and store the set in this cache folder.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def calibration_inspect(recipe_path: Path, overrides: tuple[str, ...], cache_dir: Path | None, as_json: bool) -> None:
    """Load RECIPE's calibration set for its checkpoint and describe it (check your data before a long build)."""
    from .precision.calibration import format_description, load_calibration, require_calibration
    from .components.synthesizer.checkpoint import load_checkpoint
    from .recipe.schema import load_recipe

    recipe = load_recipe(recipe_path, list(overrides))
    require_calibration(recipe.calibration)
    source = recipe.source
    checkpoint = load_checkpoint(source.checkpoint, config_path=source.config, sample_rate=source.sample_rate)
    description = load_calibration(recipe.calibration, checkpoint.spec, cache_dir=cache_dir).describe()
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


@cli.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the pruning report as JSON (the checkpoint path stays the last line).")
@_cache_dir_option
def prune(recipe_path: Path, overrides: tuple[str, ...], as_json: bool, cache_dir: Path | None) -> None:
    """Prune RECIPE.yaml's checkpoint and fine-tune it by distillation; prints the pruned checkpoint last.

    The pruned checkpoint is a source for ``rvc-compile build`` like any other; a JSON and markdown
    report (FLOPs, parameters, accuracy before and after fine-tuning) is written beside it. The
    calibration sets and the teacher's outputs are kept in the build cache (--cache-dir).
    """
    from .compress.prune_recipe import load_prune_recipe, run_prune

    recipe = load_prune_recipe(recipe_path, list(overrides))
    result = run_prune(recipe, log=lambda message: click.echo(message, err=True), cache_dir=cache_dir)
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
    click.echo(str(result.path))


@cli.command("train-bench")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--decoder", default=0.5, show_default=True, type=click.FloatRange(0.0, 0.95), help="Fraction of the decoder's block channels pruned.")
@click.option("--steps", default=30, show_default=True, type=click.IntRange(1), help="Timed steps per variant.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1), help="Interleaved rounds the steps are split into.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1))
@click.option("--segment-frames", default=32, show_default=True, type=click.IntRange(1))
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def train_bench_command(checkpoint: Path, decoder: float, steps: int, rounds: int, threads: int, segment_frames: int, batch: int, as_json: bool) -> None:
    """Time the distillation trainer on CHECKPOINT, before and after each speed-up, in one interleaved run.

    Prunes the decoder, then runs the trainer's variants (today's loop, fused Adam, decoder input
    reused, teacher cache on a first and on a later run) for --steps steps each on generated inputs,
    and prints steps per second, milliseconds per part of a step and whether the loss curves that
    must be identical are.
    """
    from .machine import cpu_info
    from .measure.training import markdown, run_train_bench

    if steps < rounds:
        raise click.UsageError(f"--steps {steps} cannot be split into --rounds {rounds}")
    result = run_train_bench(checkpoint, decoder=decoder, steps=steps, rounds=rounds, threads=threads, segment_frames=segment_frames,
                             batch=batch, log=lambda message: click.echo(message, err=True))
    click.echo(json.dumps(result, indent=2) if as_json else markdown(result, cpu_info()))


@cli.command("make-checkpoint")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "model_version", type=click.Choice(["v1", "v2"]), default="v2", show_default=True)
@click.option("--sample-rate", type=click.Choice(["32k", "40k", "48k"]), default="40k", show_default=True)
@click.option("--f0/--no-f0", default=True, show_default=True)
@click.option("--size", type=click.Choice(["small", "full"]), default="full", show_default=True, help="'small' narrows every layer (tests).")
@click.option("--layout", type=click.Choice(["small-model", "training"]), default="small-model", show_default=True)
@click.option("--key-style", type=click.Choice(["weight_g", "parametrizations"]), default="weight_g", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--scale-spread", default=0.0, show_default=True, type=click.FloatRange(0.0, 3.0),
              help="Std of log10 per-channel scales in the decoder (0.5: channel ranges spread like a trained voice's).")
def make_checkpoint_command(output: Path, model_version: str, sample_rate: str, f0: bool, size: str, layout: str, key_style: str, seed: int, scale_spread: float) -> None:
    """Write an official-format RVC checkpoint with random weights (for tests and demos)."""
    from .components.synthesizer.synthetic import make_checkpoint

    make_checkpoint(output, version=model_version, sample_rate=sample_rate, f0=f0, size=size, layout=layout, key_style=key_style, seed=seed, scale_spread=scale_spread)
    click.echo(str(output))


@cli.command("make-encoder")
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=click.Choice(["tiny", "tiny-v1", "base"]), default="base", show_default=True,
              help="base: hubert-base's real sizes; tiny: small layers (tests); tiny-v1: tiny with the 256-dim v1 output.")
@click.option("--seed", default=0, show_default=True, type=int)
def make_encoder_command(output: Path, size: str, seed: int) -> None:
    """Write a ContentVec/HuBERT Transformers folder with random weights (for tests and demos)."""
    from .components.encoder.synthetic import write_encoder_folder

    write_encoder_folder(output, size=size, seed=seed)
    click.echo(str(output))


@cli.command("make-rmvpe")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--width", type=int, help="Narrower U-Net (tests); default: the official size.")
def make_rmvpe_command(output: Path, seed: int, width: int | None) -> None:
    """Write an rmvpe.pt in the official layout with random weights (for tests and demos)."""
    from .components.pitch.synthetic import write_rmvpe

    write_rmvpe(output, seed=seed, width=width)
    click.echo(str(output))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
