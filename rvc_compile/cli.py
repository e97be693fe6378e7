"""The ``rvc-compile`` command line: parse, call the Python API, map errors to exit codes.

User errors (``RvcCompileError``) print one line on stderr, no traceback, and exit 2; a failed gate
exits 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .errors import RvcCompileError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RvcCompileError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rvc-compile")
def cli() -> None:
    """Compile trained RVC voice models into fast, verified inference artifacts."""


def main() -> None:
    cli(prog_name="rvc-compile")


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="RVC config json (training checkpoints).")
@click.option("--sample-rate", type=click.Choice(["32k", "40k", "48k"]), help="Sample rate of a training checkpoint, if its shapes are ambiguous.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(checkpoint: Path, config_path: Path | None, sample_rate: str | None, as_json: bool) -> None:
    """Describe an RVC checkpoint: version, rate, config, parameters, cost."""
    from .inspect import describe_checkpoint, format_description

    description = describe_checkpoint(checkpoint, config_path=config_path, sample_rate=sample_rate)
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
    from .audio import write_audio
    from .errors import InputError
    from .inputs import load_array, parse_noise
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
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output root (default: the recipe's output_dir).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value (repeatable).")
@click.option("--force", is_flag=True, help="Overwrite an existing artifact version.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON (the artifact path stays the last line).")
def build(recipes: tuple[Path, ...], out_dir: Path | None, overrides: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Build RECIPE.yaml into a verified artifact; prints the artifact path last."""
    from .build import build as run_build
    from .recipe import load_recipe

    for recipe_path in recipes:
        recipe = load_recipe(recipe_path, list(overrides))
        result = run_build(recipe, out_dir=out_dir, force=force, log=lambda message: click.echo(message, err=True))
        if as_json:
            click.echo(json.dumps(result.report, indent=2, default=str))
        click.echo(str(result.path))


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--skip-latency", is_flag=True, help="Check integrity and accuracy only.")
@click.option("--threads", type=int, help="Threads for the backend (default: as recorded in the artifact).")
def verify(artifact: Path, as_json: bool, skip_latency: bool, threads: int | None) -> None:
    """Re-hash, load and run ARTIFACT's golden set; exit 0 pass, 1 a gate failed, 2 unusable."""
    from .verify import format_result, verify_artifact

    result = verify_artifact(artifact, skip_latency=skip_latency, threads=threads)
    click.echo(json.dumps(result, indent=2, default=str) if as_json else format_result(result))
    if not result["passed"]:
        sys.exit(1)


@cli.group()
def recipe() -> None:
    """Recipe tools."""


@recipe.command("schema")
@click.option("--prune", "prune_schema", is_flag=True, help="The prune recipe's schema (rvc-compile prune) instead of the build recipe's.")
def recipe_schema(prune_schema: bool) -> None:
    """Print the recipe's JSON Schema (for editors)."""
    if prune_schema:
        from .prune_recipe import prune_recipe_json_schema

        click.echo(json.dumps(prune_recipe_json_schema(), indent=2))
        return
    from .recipe import recipe_json_schema

    click.echo(json.dumps(recipe_json_schema(), indent=2))


@cli.command()
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the pruning report as JSON (the checkpoint path stays the last line).")
def prune(recipe_path: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Prune RECIPE.yaml's checkpoint and fine-tune it by distillation; prints the pruned checkpoint last.

    The pruned checkpoint is a source for ``rvc-compile build`` like any other; a JSON and markdown
    report (FLOPs, parameters, accuracy before and after fine-tuning) is written beside it.
    """
    from .prune_recipe import load_prune_recipe, run_prune

    recipe = load_prune_recipe(recipe_path, list(overrides))
    result = run_prune(recipe, log=lambda message: click.echo(message, err=True))
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
    click.echo(str(result.path))


@cli.command("make-checkpoint")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "model_version", type=click.Choice(["v1", "v2"]), default="v2", show_default=True)
@click.option("--sample-rate", type=click.Choice(["32k", "40k", "48k"]), default="40k", show_default=True)
@click.option("--f0/--no-f0", default=True, show_default=True)
@click.option("--size", type=click.Choice(["small", "full"]), default="full", show_default=True, help="'small' narrows every layer (tests).")
@click.option("--layout", type=click.Choice(["small-model", "training"]), default="small-model", show_default=True)
@click.option("--key-style", type=click.Choice(["weight_g", "parametrizations"]), default="weight_g", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
def make_checkpoint_command(output: Path, model_version: str, sample_rate: str, f0: bool, size: str, layout: str, key_style: str, seed: int) -> None:
    """Write an official-format RVC checkpoint with random weights (for tests and demos)."""
    from .synthetic import make_checkpoint

    make_checkpoint(output, version=model_version, sample_rate=sample_rate, f0=f0, size=size, layout=layout, key_style=key_style, seed=seed)
    click.echo(str(output))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
