"""The `sslrecon` command: thin verbs over `sslrecon.api`.

Results go to stdout (paths, or one JSON document with --json); progress and errors go to stderr.
A user mistake prints one line naming the file and the fix and exits with status 2.
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__, api
from .config import RunConfig
from .errors import SslreconError, SslreconNote
from .io import OUTPUT_DTYPES
from .losses import LOSSES, parse_options

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Learn to denoise and reconstruct scientific images from the noisy measurements alone.")

Inputs = Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively), or - to read paths from stdin.", show_default=False)]
RunArg = Annotated[Path, typer.Argument(help="A run folder made by `sslrecon fit`, or a checkpoint .pt file.", show_default=False)]
GlobOpt = Annotated[Optional[str], typer.Option("--glob", help="Only files whose name matches this pattern, e.g. '*.mrc'.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document with the results on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random draw; the same seed reproduces a run on one device.")]
NoiseOpt = Annotated[str, typer.Option("--noise", help="Noise model in data units: gaussian:sigma=V, gaussian:sigma_per_frame=FILE (one sigma per frame of a stack), poisson:gain=V[,offset=V], pg:gain=V,sigma=V[,offset=V], gamma:looks=V[,offset=V], corr:sigma=V,size=N|kernel=FILE|psd=FILE[,gain=V,offset=V] (correlated; with gain, a level that follows the signal), or auto[:offset=V] (estimated per file).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
TileOpt = Annotated[Optional[int], typer.Option("--tile-size", help="Tile side for inference (default: chosen from available memory).")]
BlendOpt = Annotated[bool, typer.Option("--blend/--no-blend", help="Move the reconstruction towards the measurement by the weight fit recorded (the one that minimised the estimated risk on a few frames: near 1 where the network is far better than the input); --no-blend for the network's reconstruction alone.")]
TtaOpt = Annotated[bool, typer.Option("--tta/--no-tta", help="Average the reconstruction over the 90-degree rotations and flips that the noise allows (all eight for white noise): better results at about eight times the passes; --no-tta for one.")]
LossOpt = Annotated[str, typer.Option("--loss", help=f"Self-supervised loss: {', '.join(LOSSES)}, or auto (chosen for the noise model and, for Poisson-Gaussian noise, the mean photon count).")]


def _strict(doc):
    """`doc` with every float that is not finite (an empty bin's mean, an undefined ratio) as null: JSON has no NaN,
    and strict parsers (jq, JavaScript, Go) refuse Python's `NaN` token."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: _strict(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_strict(v) for v in doc]
    return doc


def _json(doc) -> str:
    return json.dumps(_strict(doc), indent=2, default=str, allow_nan=False)


def _emit(doc, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(_json(doc))
    else:
        for ln in lines:
            typer.echo(ln)


@app.command()
def fit(inputs: Inputs, out: Annotated[Path, typer.Option("-o", "--out", help="Run folder to create.")],
        loss: LossOpt = "sure", noise: NoiseOpt = "auto",
        steps: Annotated[int, typer.Option(help="Training steps (with --resume: the new total).")] = 2000,
        batch_size: Annotated[int, typer.Option(help="Patches per step.")] = 8,
        patch_size: Annotated[int, typer.Option(help="Patch side in pixels.")] = 64,
        val_fraction: Annotated[float, typer.Option(help="Fraction of the measurements held out for validation.")] = 0.1,
        val_every: Annotated[int, typer.Option(help="Evaluate the held-out risk and save checkpoints every N steps.")] = 100,
        lr: Annotated[float, typer.Option(help="Adam learning rate (cosine decay).")] = 1e-3,
        width: Annotated[int, typer.Option(help="U-Net channels at full resolution.")] = 32,
        depth: Annotated[int, typer.Option(help="U-Net down-samplings.")] = 3,
        loss_option: Annotated[Optional[list[str]], typer.Option("--loss-option", help="KEY=VALUE option of the loss, repeatable, e.g. second_order=true or finite=true|false|auto|counts (pg-sure; default auto: the finite difference below 10 counts per pixel and on whole counts; counts: on whole counts only; pg-unsure takes auto or false), probes=2 (sure, pg-sure: divergence probes averaged per step; default 1), alpha=0.2 (r2r, gr2r-poisson; gr2r-poisson's default is auto), test_samples=20 (gr2r-poisson; default auto), split=shifted (gr2r-poisson: read noise split as extra counts; default posterior), radius=1 or grid=4 (n2s: the blind square and its spacing; default auto, wider under correlated noise), step=0.02, hold_steps=0 or room_steps=0 (unsure, pg-unsure; hold_steps defaults to half the run, room_steps to 300).")] = None,
        device: DeviceOpt = "auto", seed: SeedOpt = 0, glob: GlobOpt = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its last.pt.")] = False,
        overwrite: OverwriteOpt = False, json_out: JsonOpt = False):
    """Learn a denoiser from noisy measurements alone.

    Example: sslrecon fit ./micrographs --loss sure --noise auto --steps 2000 -o runs/m1
    """
    cfg = RunConfig(loss=loss, noise=noise, steps=steps, batch_size=batch_size, patch_size=patch_size,
                    val_fraction=val_fraction, val_every=val_every, lr=lr, width=width, depth=depth, seed=seed,
                    device=device, glob=glob, loss_options=parse_options(loss_option or []))
    doc = api.fit(inputs, out, config=cfg, resume=resume, overwrite=overwrite, progress=True)
    _emit(doc, json_out, [str(Path(doc["run"]) / "model.pt")])


@app.command()
def reconstruct(run: RunArg, inputs: Inputs,
                outdir: Annotated[Path, typer.Option("-o", "--out", help="Output folder (same names and formats as the inputs).")],
                tile_size: TileOpt = None,
                dtype: Annotated[str, typer.Option(help=f"Output dtype: {', '.join(OUTPUT_DTYPES)} (auto: integer inputs become float32, float stays).")] = "auto",
                noise: Annotated[Optional[str], typer.Option("--noise", help="Override the noise model the run recorded (same forms as fit; auto re-estimates it per file).")] = None,
                test_samples: Annotated[Optional[int], typer.Option(help="Passes averaged by test-time rules that draw noise (r2r, gr2r-poisson); default: the number the run recorded (gr2r-poisson's test_samples=auto: 5-64, more where the noise is mostly read noise). With --tta they are shared out among the rotations and flips.")] = None,
                tta: TtaOpt = True, blend: BlendOpt = True, device: DeviceOpt = "auto", glob: GlobOpt = None,
                overwrite: OverwriteOpt = False, json_out: JsonOpt = False):
    """Apply a trained run to images, one file at a time (tiled), keeping format and metadata.

    Example: sslrecon reconstruct runs/m1 ./micrographs -o ./denoised
    """
    if dtype not in OUTPUT_DTYPES:
        raise typer.BadParameter(f"choose one of {', '.join(OUTPUT_DTYPES)}", param_hint="--dtype")
    files = []
    for item in api.reconstruct(run, inputs, outdir, tile_size=tile_size, dtype=dtype, noise=noise,
                                test_samples=test_samples, tta=tta, blend=blend, device=device, glob=glob,
                                overwrite=overwrite,
                                stdin=sys.stdin if "-" in inputs else None):
        files.append(item)
        if not json_out:
            typer.echo(item["output"])
    if json_out:
        typer.echo(_json({"run": str(run), "files": files}))


@app.command()
def validate(run: RunArg, inputs: Inputs,
             reference: Annotated[Optional[Path], typer.Option(help="Folder of clean references with the same file names.")] = None,
             data_range: Annotated[Optional[float], typer.Option(help="PSNR data range (default: dtype range for integers, max-min for floats).")] = None,
             noise: Annotated[Optional[str], typer.Option("--noise", help="Override the noise model the run recorded (auto re-estimates it per file).")] = None,
             tile_size: TileOpt = None, tta: TtaOpt = True, blend: BlendOpt = True, device: DeviceOpt = "auto",
             glob: GlobOpt = None, json_out: JsonOpt = False):
    """Estimate reconstruction quality on held-out measurements without ground truth.

    Example: sslrecon validate runs/m1 ./held_out --json
    """
    doc = api.validate(run, inputs, reference=reference, data_range=data_range, noise=noise, tile_size=tile_size,
                       tta=tta, blend=blend, device=device, glob=glob, stdin=sys.stdin if "-" in inputs else None)
    def est(v):
        return f"{v:.2f}" if v is not None else "n/a"

    lines = [f"{f['path']}\testimated_psnr {est(f['estimated_psnr'])}" + (f"\tpsnr {f['psnr']:.2f}\tssim {f['ssim']:.4f}" if "psnr" in f else "")
             + (f"\twarning: {f['warning']}" if "warning" in f else "") + (f"\tnote: {f['note']}" if "note" in f else "")
             for f in doc["files"]]
    lines.append(f"mean\testimated_psnr {est(doc['estimated_psnr'])}" + (f"\tpsnr {doc['psnr']:.2f}\tssim {doc['ssim']:.4f}" if "psnr" in doc else ""))
    _emit(doc, json_out, lines)


@app.command()
def finetune(run: RunArg, inputs: Inputs, out: Annotated[Path, typer.Option("-o", "--out", help="New run folder.")],
             steps: Annotated[int, typer.Option(help="Training steps.")] = 200,
             loss: Annotated[Optional[str], typer.Option("--loss", help="Another loss (default: the run's).")] = None,
             noise: Annotated[Optional[str], typer.Option("--noise", help="Another noise model (default: the run's --noise; with auto, the run's default, estimated afresh on these inputs).")] = None,
             lr: Annotated[Optional[float], typer.Option(help="Learning rate (default: half the run's).")] = None,
             device: DeviceOpt = "auto", seed: Annotated[Optional[int], typer.Option(help="Seed (default: the run's).")] = None,
             overwrite: OverwriteOpt = False, json_out: JsonOpt = False):
    """Adapt a trained model to new measurements, starting from its weights.

    Example: sslrecon finetune runs/m1 ./new_session -o runs/m2 --steps 200
    """
    doc = api.finetune(run, inputs, out, steps=steps, loss=loss, noise=noise, lr=lr, device=device, seed=seed,
                       overwrite=overwrite, progress=True, stdin=sys.stdin if "-" in inputs else None)
    _emit(doc, json_out, [str(Path(doc["run"]) / "model.pt")])


@app.command()
def noise(inputs: Inputs,
          plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of the mean-variance fit and the noise autocorrelation.")] = None,
          offset: Annotated[Optional[float], typer.Option("--offset", help="Known dark level (offset) in data units; separates it from read noise.")] = None,
          glob: GlobOpt = None, overwrite: OverwriteOpt = False, json_out: JsonOpt = False):
    """Estimate the noise model of measurements, with the evidence for it.

    Example: sslrecon noise ./micrographs --plot noise.png
    """
    doc = api.noise(inputs, offset=offset, glob=glob, plot=plot, overwrite=overwrite,
                    stdin=sys.stdin if "-" in inputs else None)
    lines = [f"model\t{doc['spec']}", f"kind\t{doc['kind']}"]
    if "gain" in doc:
        lines.append(f"parameters\tgain {doc['gain']:.6g}\tsigma {doc['sigma']:.6g}\toffset {doc['offset']:.6g}")
    if doc["heldout_variance_error"] is not None:
        lines.append(f"held_out\tr2 {doc['r2_heldout']:.3f}\tvariance error {100 * doc['heldout_variance_error']:.1f} %")
    corr = doc["correlation"]
    lines.append(f"correlation\th {corr['lag_h']:.3f}\tv {corr['lag_v']:.3f}")
    clip = doc["clipping"]
    lines.append("clipping\t" + (", ".join(f"{side} {clip[side]:g} ({100 * clip['fraction_' + side]:.2g} %)"
                                           for side in ("low", "high") if clip[side] is not None) or "none"))
    lines.append(f"loss_auto\t{doc['loss_auto']}")
    lines += [f"note\t{n}" for n in doc["notes"]]
    if len(doc["files"]) > 1:
        lines.append("noise_auto\t" + ("the pooled model for every file (one detector)" if doc["one_session"]
                                        else "each file's own model"))
        lines += [f"{f['path']}\t{f['spec']}" + (f"\tr2 {f['r2_heldout']:.3f}" if f["r2_heldout"] is not None else "")
                  for f in doc["files"]]
    lines += [f"sigma_per_frame\t{f['path']}\t{min(f['sigma_per_frame']):.6g} to {max(f['sigma_per_frame']):.6g} over "
              f"{len(f['sigma_per_frame'])} frames" for f in doc["files"] if "sigma_per_frame" in f]
    if plot is not None:
        lines.append(f"plot\t{plot}")
    _emit(doc, json_out, lines)


def version_callback(value: bool):
    if value:
        typer.echo(f"sslrecon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")] = False,
          debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False):
    pass


def _notes_to_stderr(show):
    """A `warnings.showwarning` that prints notes as one stderr line each and hands any other warning to `show`."""
    def showwarning(message, category, *args, **kwargs):
        if issubclass(category, SslreconNote):
            sys.stderr.write(f"sslrecon: note: {message}\n")
        else:
            show(message, category, *args, **kwargs)
    return showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps SslreconError to one stderr line and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", SslreconNote)
            warnings.showwarning = _notes_to_stderr(warnings.showwarning)
            app(args=argv, standalone_mode=False, prog_name="sslrecon")
    except SslreconError as e:
        if debug:
            raise
        sys.stderr.write(f"sslrecon: error: {e.line()}\n")
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("sslrecon: interrupted\n")
        return 130
    except Exception as e:  # click usage errors (typer may vendor click) carry their own exit code and message
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show(file=sys.stderr)
            return e.exit_code
        raise
    return 0
