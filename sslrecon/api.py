"""The Python API: `fit`, `finetune`, `reconstruct`, `validate`. The CLI calls exactly these.

Each function returns plain data (the same document that `--json` prints) and raises
`SslreconError` subclasses for user mistakes; nothing here prints or exits.
"""
from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import fields, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from . import __version__
from .config import RunConfig
from .data import HotRepaired, Normalization, PatchSampler, split_regions, strided_sample
from .engine import checkpoint
from .engine.bundle import Reconstructor, file_seed
from .engine.metrics import data_range as default_data_range
from .engine.metrics import psnr, psnr_from_mse, ssim
from .engine.train import train
from .errors import ConfigError, InputError
from .io import ImageFile, check_output, find_inputs, open_image, record_output, write_like
from .io.base import atomic_output
from .losses import LOSSES, build_loss, earlier_defaults
from .models import UNet, UNetConfig
from .noise import AutoNoise, NoiseReport, analyze_noise, parse_noise
from .noise.estimate import central_crop, one_session, per_frame, serves
from .noise.models import NoiseModel, PerFrame, file_model, frame_model, from_dict, with_kernel
from .noise.models import stack as stack_noise
from .physics import Denoising

VAL_PATCHES = 32


def resolve_device(spec: str) -> torch.device:
    """`auto`: CUDA when present, else CPU; `cpu`; `cuda` or `cuda:i` (must exist)."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device '{spec}'", fix="use --device auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("CUDA is not available on this machine", fix="use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"no CUDA device {dev.index} (found {torch.cuda.device_count()})",
                              fix="choose an existing --device cuda:N")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device '{spec}'", fix="use --device auto, cpu, cuda or cuda:N")
    return dev


def _open_checked(paths: list[Path], stack: ExitStack) -> list[HotRepaired]:
    """Open every input and check its data is finite, before anything is written; frames are read with their hot
    pixels repaired (`HotRepaired`), as the network sees them."""
    images = [stack.enter_context(open_image(p)) for p in paths]
    for img in images:
        img.check_finite()
    return [HotRepaired(img) for img in images]


def _hot_report(images: list[HotRepaired]) -> dict:
    """`hot_pixels`: the hot pixels found in each file (of the frames read), where any were."""
    found = {str(img.path): img.hot for img in images if img.hot}
    return {"hot_pixels": found} if found else {}


def _check_all(paths: list[Path]) -> list[tuple[int, tuple[int, int]]]:
    """Open, check (finite data) and close every input before anything is written; returns the
    (frames, shape) of each. Files are then reopened one at a time, so open files and memory do not
    grow with the number of inputs."""
    shapes = []
    for p in paths:
        with open_image(p) as img:
            img.check_finite()
            shapes.append((img.n_frames, img.shape))
    return shapes


def _normalization(images: list[ImageFile]) -> Normalization:
    return Normalization.from_frames((f for img in images for f in img.frames()),
                                     count=sum(img.n_frames for img in images))


NOISE_FRAMES = 16  # frames a noise estimate looks at, spread evenly over the files


def _spread(slots: list, limit: int = NOISE_FRAMES) -> list:
    """At most `limit` of `slots`, evenly spread, in order."""
    pick = np.linspace(0, len(slots) - 1, num=min(limit, len(slots))).round().astype(int)
    return [slots[j] for j in sorted(set(pick.tolist()))]


def _sample_frames(images: list[ImageFile]) -> list[np.ndarray]:
    return [img.frame(i) for img, i in _spread([(img, i) for img in images for i in range(img.n_frames)])]


def file_noise(given: NoiseModel | AutoNoise, img: ImageFile) -> NoiseModel | PerFrame:
    """The noise model of one file, in data units: the one given (a parsed `--noise`), or for `auto`
    the file's own estimate, since gain and read noise differ between sessions and detectors (and a
    stack's Gaussian level may differ between its frames: then one model per frame)."""
    if isinstance(given, AutoNoise):
        return _own_noise(_file_report(img, given.offset), img)
    _check_frame_count(given, img.n_frames, img.path)
    return given


def _file_report(img: ImageFile, offset: float | None) -> NoiseReport:
    return _analyze(_sample_frames([img]), img.path, offset, evidence=False)


def _analyze(frames: list[np.ndarray], path: Path, offset: float | None, evidence: bool = True) -> NoiseReport:
    """`analyze_noise` of one file's `frames`, its refusal (a constant image: no noise to measure) one input error."""
    try:
        return analyze_noise(frames, offset=offset, evidence=evidence)
    except ValueError as e:
        raise InputError(str(e), path=path, fix="leave this file out, or give its noise with --noise") from None


def _own_noise(report: NoiseReport, img: ImageFile) -> NoiseModel | PerFrame:
    return per_frame(report.model, img.frame, img.n_frames, report.clipping)


def _check_frame_count(given, n_frames: int, path: Path) -> None:
    """A per-frame `--noise` must give one model per frame of the file."""
    if isinstance(given, PerFrame) and len(given.frames) != n_frames:
        raise InputError(f"--noise gives {len(given.frames)} per-frame sigmas, but the file has {n_frames} frame(s)",
                         path=path, fix="give one sigma per frame of every input, or one sigma")


def noise_models(spec: str, images: list[ImageFile]) -> tuple[NoiseModel, list[NoiseModel | PerFrame]]:
    """The noise model of the whole set (reported) and of each file (used), in data units. For `auto` each
    file's own estimate, or the pooled one for every file where their signal-dependent noise is one detector's
    (`one_session`): pooled frames hold more data and average out one image's texture."""
    given = parse_noise(spec)
    if not isinstance(given, AutoNoise):
        return file_model(given), [file_noise(given, img) for img in images]
    pooled, per_file = _auto_noise(given, images, [img.n_frames for img in images])
    return (file_model(per_file[0]) if pooled is None else pooled.model), per_file


def _auto_noise(given: AutoNoise, images: Iterable[ImageFile], n_frames: list[int],
                keep: dict[Path, NoiseReport] | None = None) -> tuple[NoiseReport | None, list[NoiseModel | PerFrame]]:
    """`--noise auto` for a set of files (`images`, which may be opened one at a time as they are iterated;
    `n_frames`, each file's frame count): the pooled report (over frames spread across all of them; None for one file,
    whose own estimate is the pooled one) and each file's model, the pooled one where their noise is one detector's
    (`one_session`), else its own. Single textured images read the gain up to 35 % off where the pooled frames read it
    within 2 %. `keep`, where given, receives each file's own report by resolved path."""
    slots = set(_spread([(i, j) for i, n in enumerate(n_frames) for j in range(n)]))
    reports, own, samples = [], [], []
    for i, img in enumerate(images):
        reports.append(_file_report(img, given.offset))
        if keep is not None:
            keep[Path(img.path).resolve()] = reports[-1]
        own.append(_own_noise(reports[-1], img))
        if len(n_frames) > 1:
            samples.extend(central_crop(img.frame(j)) for j in range(img.n_frames) if (i, j) in slots)
    pooled = analyze_noise(samples, offset=given.offset, evidence=False) if samples else None
    if pooled is not None and one_session(reports, pooled):
        return pooled, [pooled.model] * len(own)
    return pooled, own


def _opened(paths: list[Path]) -> Iterator[ImageFile]:
    """Each input opened in turn, closed before the next."""
    for p in paths:
        with open_image(p) as img:
            yield img


def _recorded_noise(state: dict, override: NoiseModel | PerFrame | AutoNoise | None, paths: list[Path],
                    shapes: list[tuple[int, tuple[int, int]]], keep: dict[Path, NoiseReport] | None = None,
                    unfit: set[Path] | None = None):
    """The noise model for each file at reconstruction: `--noise` (parsed) when given (`auto` estimates it over
    all the inputs, `_auto_noise`, whose per-file reports go to `keep`), else the model the run recorded: the
    file's own when it was trained on (a per-frame model only while the file still has that many frames), else
    the run's, or where `--noise auto` gave each of the run's files its own model (`noise_own_per_file`: files
    that are not one detector's, such as the five FMD frames at gains 4-22) the file's own estimate: the run's
    model is then the pool of unlike files, which fits none of them. With `unfit` (validate's) a file not trained on
    by a `--noise auto` run is also checked against the run's model: where that does not give the variance of the
    file's own fit as a file of one detector's would (`serves`: another session, gain or dark level), the file's own
    estimate is taken and its path added to `unfit`."""
    if isinstance(override, AutoNoise):  # as `fit` takes it, with one file open at a time
        _, models = _auto_noise(override, _opened(paths), [n for n, _ in shapes], keep)
        estimated = {p.resolve(): m for p, m in zip(paths, models)}
        return lambda img: estimated[Path(img.path).resolve()]
    if override is not None:
        return lambda img: file_noise(override, img)
    per_file = {Path(p).resolve(): from_dict(m) for p, m in state.get("noise_per_file", {}).items()}
    pooled = from_dict(state["noise"])
    own = state.get("noise_own_per_file", False)  # (runs from before it was recorded: the run's model)

    auto = parse_noise(state["config"]["noise"])

    def noise_for(img: ImageFile) -> NoiseModel | PerFrame:
        m = per_file.get(Path(img.path).resolve())
        if m is None:
            m = pooled
            if isinstance(auto, AutoNoise) and (own or unfit is not None):
                report = _file_report(img, auto.offset)
                if own or not _serves_file(pooled, report):
                    m = _own_noise(report, img)
                    if not own:
                        unfit.add(Path(img.path).resolve())
        return file_model(m) if isinstance(m, PerFrame) and len(m.frames) != img.n_frames else m

    return noise_for


def _serves_file(model: NoiseModel | PerFrame, report: NoiseReport) -> bool:
    """Whether a run's `model` fits a file whose own noise `report` has a mean-variance fit as a pooled model fits
    the files of one detector (`serves`); true where there is nothing to compare (no fit, a model per frame)."""
    return report.fit is None or isinstance(model, PerFrame) or serves(model, report.fit)


#: mean photon count below which `--loss auto` takes `gr2r-poisson` for white Poisson(-Gaussian) noise: over three
#: seeds at 1 / 5 photons (Set12, read noise 3) it beat pg-sure by 2.2 / 0.2 dB (16.73 / 14.57, 22.51 / 22.29), and
#: tied on the FMD frames (1-3 photons, 36.03 / 36.07); at 30 photons they are within 0.25 dB (27.59 / 27.38), and
#: pg-sure's one test-time pass is 5x cheaper (benchmarks/results/denoise_pg_three_seeds.json, denoise_pg_fmd.json)
GR2R_BELOW_COUNTS = 20.0


def auto_loss(noise: NoiseModel, mean: float | None = None) -> str:
    """The loss `--loss auto` picks for a noise model and the data's mean (data units): for white Poisson or
    Poisson-Gaussian noise at fewer than `GR2R_BELOW_COUNTS` photons on average `gr2r-poisson` (at low counts the
    first-order expansion in the photon step that pg-sure rests on is poor), else Poisson-Gaussian SURE for
    white signal-dependent noise, SURE for white Gaussian noise and, with the covariance, for correlated
    (Gaussian or signal-dependent) noise, Noise2Self for noise no risk estimator here models (gamma)."""
    # (correlated noise: its pixels are not counts, so `sure` with its covariance, what pg-sure reduces to there)
    counts = noise.signal_dependent and noise.white
    if counts and mean is not None and LOSSES["gr2r-poisson"].supports(noise):
        pg = noise.as_pg()
        if (mean - float(pg.offset)) / float(pg.gain) < GR2R_BELOW_COUNTS:
            return "gr2r-poisson"
    if counts and LOSSES["pg-sure"].supports(noise):
        return "pg-sure"
    return next((name for name in ("sure", "r2r", "n2s") if LOSSES[name].supports(noise)), "n2s")


def noise(inputs: Iterable[str], *, offset: float | None = None, glob: str | None = None, plot: str | Path | None = None,
          overwrite: bool = False, stdin: Iterable[str] | None = None) -> dict:
    """Estimate the noise of `inputs` with its evidence: the pooled model (all files together, from
    up to 16 frames spread over them) and each file's own. `one_session`: whether `--noise auto` takes the
    pooled model for every file (their signal-dependent noise agrees) rather than each file's own.
    `plot`: a PNG of the mean-variance fit and the noise autocorrelation."""
    paths = find_inputs(list(inputs), glob, stdin)
    if plot is not None:
        check_output(Path(plot), overwrite=overwrite, inputs=tuple(paths))
    shapes = _check_all(paths)
    pooled_slots = set(_spread([(i, j) for i, (n, _) in enumerate(shapes) for j in range(n)]))
    files, samples, reports, means = [], [], [], []
    for i, p in enumerate(paths):
        with open_image(p) as img:
            sampled = _sample_frames([img])
            reports.append(_analyze(sampled, p, offset))
            means.append(float(strided_sample(sampled, len(sampled)).mean()))  # as fit's normalisation shift
            files.append({"path": str(p), **reports[-1].to_dict()})
            frames = per_frame(reports[-1].model, img.frame, img.n_frames, reports[-1].clipping)
            if isinstance(frames, PerFrame):  # the model --noise auto uses: one sigma per frame
                files[-1]["sigma_per_frame"] = [m.sigma for m in frames.frames]
            if len(paths) > 1:  # one file: the pooled frames are its own, and so is the report
                samples.extend(central_crop(img.frame(j)) for j in range(img.n_frames) if (i, j) in pooled_slots)
    pooled = analyze_noise(samples, offset=offset) if samples else reports[0]
    mean = float(np.mean(means))
    doc = {"inputs": [str(p) for p in paths], **pooled.to_dict(), "loss_auto": auto_loss(pooled.model, mean),
           "one_session": one_session(reports, pooled), "files": files}
    if plot is not None:
        from .noise.plot import plot_report

        with atomic_output(Path(plot), overwrite=overwrite, inputs=tuple(paths)) as tmp:
            plot_report(pooled, tmp, title=f"{len(paths)} file(s): {pooled.model.spec()}")
        doc["plot"] = str(plot)
    return doc


def _check_run_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError("run folder exists and is not empty", path=out,
                          fix="choose another -o, pass --resume to continue it, or --overwrite to replace it")


def _train_run(cfg: RunConfig, images: list[ImageFile], paths: list[Path], out: Path, *, norm: Normalization,
               device: torch.device, init: dict | None, resume: dict | None, progress: bool) -> dict:
    t0 = time.perf_counter()
    noise, per_file = noise_models(cfg.noise, images)
    # `--noise auto` found the files unlike (not one detector's) and gave each its own model: so will new files get
    own = isinstance(parse_noise(cfg.noise), AutoNoise) and len(per_file) > 1 and any(m != noise for m in per_file)
    if cfg.loss == "auto":
        cfg = replace(cfg, loss=auto_loss(noise, norm.shift))  # (the shift is the data's mean)
    learns = LOSSES[cfg.loss].learns_noise  # then the given or estimated models only start its own, per file
    options = {**cfg.loss_options, "groups": len(paths)} if learns else cfg.loss_options
    if resume is not None:  # a run from before an option existed resumes with what it was trained with
        earlier = earlier_defaults(cfg.loss, resume["loss_options"])
        options = {**earlier, **options}
        if learns:  # and the hold it was planned with, whatever the command says
            options["hold_steps"] = {**earlier, **resume["loss_options"]}["hold_steps"]
    loss = build_loss(cfg.loss, **options)
    if learns:
        loss.plan(cfg.steps)  # settles what follows the run's length (hold_steps="auto")
    for p, m in zip(paths, map(file_model, per_file)):  # each file's model, so that a refusal names the file
        if not LOSSES[cfg.loss].supports(m):  # (a loss that learns the noise takes any model as its start)
            raise ConfigError(f"loss {cfg.loss} does not support {m.name} noise (the model of {p})",
                              fix=f"use --loss {auto_loss(m, norm.shift)} or --loss auto")
        try:
            loss.check_noise(m)  # what the loss's options cannot take
        except ConfigError as e:
            raise ConfigError(e.message, path=p, fix=e.fix) from None
    per_file_n = [m.rescaled(norm.shift, norm.scale) for m in per_file]
    try:  # batches mix files: refuse models that cannot share a batch now, not mid-training
        if not learns:
            stack_noise([file_model(m) for m in per_file_n])
    except ValueError as e:
        raise ConfigError(f"the inputs' noise models cannot be trained together ({e})",
                          fix="pass one --noise for all inputs, or fit these inputs separately") from None

    def physics_for(sources: list[tuple[int, int]]) -> Denoising:
        """The physics of a batch whose patches come from (file, frame) `sources`."""
        if learns:  # the loss's current per-file estimates, in training and validation alike
            return loss.physics([f for f, _ in sources])
        return Denoising(batch_noise(per_file_n, sources, device))

    with torch.random.fork_rng(devices=[]):  # initial weights from the run seed, global stream untouched
        torch.manual_seed(cfg.seed)
        model = UNet(UNetConfig(width=cfg.width, depth=cfg.depth))
    if init is not None:
        model.load_state_dict(init["model"])
    if resume is not None:
        model.load_state_dict(resume["model"])
        loss.load_state_dict(resume["loss_state"])  # (the same files: `fit` refuses other inputs)
    train_regions, val_regions = split_regions(images, cfg.val_fraction)
    sampler = PatchSampler(train_regions, cfg.patch_size, norm)
    val_batch = None
    if val_regions:
        vy, vsources = PatchSampler(val_regions, cfg.patch_size, norm).fixed_batch(VAL_PATCHES, cfg.seed)
        val_batch = (vy.to(device), vsources)
    y0, src0 = sampler.fixed_batch(VAL_PATCHES, cfg.seed + 3)
    if learns:
        loss.initialise([file_model(m) for m in per_file_n], y0, [f for f, _ in src0], [str(p) for p in paths])
    else:
        loss.adapt(y0.to(device), physics_for(src0))
    meta = {
        "package": __version__, "config": cfg.to_dict(), "inputs": [str(p) for p in paths],
        "noise": noise.to_dict(), "noise_normalized": noise.rescaled(norm.shift, norm.scale).to_dict(),
        "noise_per_file": {str(p): m.to_dict() for p, m in zip(paths, per_file)}, "noise_own_per_file": own,
        "normalization": norm.to_dict(),
        "model_config": model.config.to_dict(), "loss": cfg.loss, "loss_options": loss.options(),
        "modality": "denoising", "patch_size": sampler.p,
    }

    def make_state() -> dict:
        """The plain-data part of a checkpoint and of config.json; a loss that learns the noise records its
        current model as the run's (what reconstruct and validate use), the given or estimated one as the start."""
        if not learns:
            return dict(meta)
        pooled = loss.pooled_model()
        in_data = to_data_units(pooled, norm).to_dict()
        per_file = {str(p): to_data_units(m, norm).to_dict() for p, m in zip(paths, loss.noise_models())}
        return {**meta, "noise": in_data, "noise_learned": in_data, "noise_normalized": pooled.to_dict(),
                "noise_per_file": per_file, "noise_initial": meta["noise"],
                "noise_initial_per_file": meta["noise_per_file"]}

    def report() -> dict:
        """The learned noise for metrics.jsonl: the mean over files, and each file's for up to 32 files."""
        if not learns:
            return {}
        state = make_state()
        return {"noise_learned": state["noise_learned"],
                **({"noise_learned_per_file": state["noise_per_file"]} if len(paths) <= 32 else {})}

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(make_state(), indent=2) + "\n")
    summary = train(model=model, loss=loss, sampler=sampler, val_batch=val_batch, physics_for=physics_for,
                    steps=cfg.steps,
                    batch_size=cfg.batch_size, lr=cfg.lr, val_every=cfg.val_every, seed=cfg.seed, run_dir=out,
                    device=device, make_state=make_state, resume=resume, progress=progress,
                    to_data_units=norm.scale**2, report=report)
    final = {**make_state(), **_hot_report(images)}
    final["blend"] = _record_blend(out, images, paths, val_regions, final, device, cfg.seed)
    (out / "config.json").write_text(json.dumps(final, indent=2) + "\n")
    # `seconds` (and `steps_per_second`) count the training steps; `total_seconds` the noise estimate, the training
    # and the blend's weight too
    return {"run": str(out), "device": str(device), **final, **summary,
            "total_seconds": round(time.perf_counter() - t0, 3)}


BLEND_FRAMES = 8  # frames the blend's weight is found on, spread over the held-out ones (else over all)
BLEND_PIXELS = 2**19  # pixels it looks at in all: central crops of the frames, at most 512 x 512 each


def _record_blend(out: Path, images: list[ImageFile], paths: list[Path], val_regions: list, state: dict,
                  device: torch.device, seed: int) -> dict:
    """Find the weight of the run's reconstruction against the measurement (`Reconstructor.blend_weight`), with and
    without the symmetry average, on whole frames (central crops; tiles as `reconstruct` makes them): the held-out
    ones where training held out whole frames, else frames it also trained on (a network that has learned their
    noise can look better there than it is, so the weight errs towards the network's own output). Recorded in
    `model.pt`, the checkpoint `reconstruct` and `validate` load; `state` is the run's plain data (its noise per
    file, in data units)."""
    held = [(r.source, r.frame) for r in val_regions if r.rows == (0, r.image.shape[0])]
    slots = _spread(held or [(k, i) for k, img in enumerate(images) for i in range(img.n_frames)], BLEND_FRAMES)
    side = min(512, int(np.sqrt(BLEND_PIXELS / len(slots))))
    noise = [from_dict(state["noise_per_file"][str(p)]) for p in paths]
    frames = [(central_crop(images[k].frame(i), side), frame_model(noise[k], i)) for k, i in slots]
    checkpointed = checkpoint.load(out / "model.pt")
    blend = {key: round(Reconstructor.from_checkpoint(checkpointed, device, tta=tta, blend=False)
                        .blend_weight(frames, seed), 4)
             for key, tta in (("tta", True), ("single", False))}
    blend.update(frames=len(frames), pixels=sum(int(np.size(f)) for f, _ in frames), held_out=bool(held))
    checkpoint.save({**checkpointed, "blend": blend}, out / "model.pt")
    return blend


def batch_noise(per_file: list[NoiseModel | PerFrame], sources: list[tuple[int, int]],
                device: torch.device | str = "cpu") -> NoiseModel:
    """One model for a batch whose sample `k` is a patch of frame `sources[k][1]` of file `sources[k][0]`."""
    return stack_noise([frame_model(per_file[f], i) for f, i in sources], device)


def to_data_units(model: NoiseModel, norm: Normalization) -> NoiseModel:
    """A noise model in normalised units mapped back to the data's units (the inverse of `rescaled`)."""
    return model.rescaled(-norm.shift / norm.scale, 1 / norm.scale)


def fit(inputs: Iterable[str], out: str | Path, *, config: RunConfig = RunConfig(), resume: bool = False,
        overwrite: bool = False, progress: bool = False, stdin: Iterable[str] | None = None) -> dict:
    """Learn a denoiser from the measurements `inputs` (files, folders, `-`) into the run folder `out`."""
    out = Path(out)
    state = None
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise ConfigError("nothing to resume (no last.pt)", path=out, fix="run `sslrecon fit` without --resume")
        state = checkpoint.load(last)
        config = _resumed_config(config, state, out)
    else:
        _check_run_dir(out, overwrite)
        if overwrite and out.exists():
            for name in ("model.pt", "last.pt", "metrics.jsonl", "config.json"):
                (out / name).unlink(missing_ok=True)
    if config.loss not in LOSSES and config.loss != "auto":
        raise ConfigError(f"unknown loss '{config.loss}'", fix=f"choose --loss from: auto, {', '.join(LOSSES)}")
    device = resolve_device(config.device)
    paths = find_inputs(list(inputs), config.glob, stdin)
    if state is not None and sorted(Path(p).resolve() for p in paths) != sorted(Path(p).resolve()
                                                                              for p in state["inputs"]):
        raise ConfigError(f"--resume continues a run on the files it was started on ({len(state['inputs'])}, listed "
                          "in its config.json), not on other ones", path=out,
                          fix="resume with the run's inputs, or train on the new files with `sslrecon finetune`")
    with ExitStack() as stack:
        images = _open_checked(paths, stack)
        if state is not None:
            norm = Normalization(**state["normalization"])
        else:
            norm = _normalization(images)
        return _train_run(config, images, paths, out, norm=norm, device=device, init=None, resume=state,
                          progress=progress)


def _resumed_config(config: RunConfig, state: dict, out: Path) -> RunConfig:
    """The run's own configuration with `config`'s steps (the new total), refusing what `--resume` cannot honour: a
    total not beyond the steps done, and options set (away from their defaults) to other values than the run's."""
    run = RunConfig.from_dict(state["config"])
    done = int(state["step"])
    if config.steps <= done:
        raise ConfigError(f"the run has done {done} steps, and --steps ({config.steps}) is the new total", path=out,
                          fix=f"give --steps above {done}")
    default = RunConfig()
    changed = [n for n in (f.name for f in fields(RunConfig)) if n not in ("steps", "device", "version")
               and getattr(default, n) != getattr(config, n) != getattr(run, n)]
    if changed:
        said = ", ".join(f"--{n.replace('_', '-')} {getattr(config, n)} (the run's: {getattr(run, n)})"
                         for n in changed)
        raise ConfigError(f"--resume continues the run as it was configured, not with {said}", path=out,
                          fix="leave those options out to resume, or train on from the run with `sslrecon finetune`")
    return replace(run, steps=config.steps)


def finetune(run: str | Path, inputs: Iterable[str], out: str | Path, *, steps: int = 200, loss: str | None = None,
             noise: str | None = None, lr: float | None = None, device: str = "auto", seed: int | None = None,
             overwrite: bool = False, progress: bool = False, stdin: Iterable[str] | None = None) -> dict:
    """Continue training the model of `run` on `inputs` (optionally with another loss or noise model)."""
    state = checkpoint.load(run)
    base = RunConfig.from_dict(state["config"])
    cfg = replace(base, steps=steps, loss=loss or base.loss, noise=noise or base.noise, lr=lr or base.lr * 0.5,
                  device=device, seed=base.seed if seed is None else seed,
                  loss_options={} if loss and loss != base.loss else base.loss_options)
    out = Path(out)
    _check_run_dir(out, overwrite)
    paths = find_inputs(list(inputs), cfg.glob, stdin)
    with ExitStack() as stack:
        images = _open_checked(paths, stack)
        norm = _normalization(images)
        result = _train_run(cfg, images, paths, out, norm=norm, device=resolve_device(device), init=state,
                            resume=None, progress=progress)
    result["finetuned_from"] = str(run)
    return result


def _outputs(paths: list[Path], outdir: Path, overwrite: bool) -> list[Path]:
    dests, seen = [], {}
    for p in paths:
        d = outdir / p.name
        if d.name in seen:
            raise InputError(f"two inputs share the name {p.name} ({seen[d.name]} and {p}), and outputs are written "
                             "side by side under -o", path=p,
                             fix="reconstruct them into separate output folders")
        seen[d.name] = p
        check_output(d, overwrite=overwrite, inputs=tuple(paths))
        dests.append(d)
    return dests


def reconstruct(run: str | Path, inputs: Iterable[str], outdir: str | Path, *, tile_size: int | None = None,
                dtype: str = "auto", noise: str | None = None, test_samples: int | None = None, tta: bool = True,
                blend: bool = True, device: str = "auto", glob: str | None = None, overwrite: bool = False,
                stdin: Iterable[str] | None = None) -> Iterator[dict]:
    """Reconstruct every input into `outdir` (same names and formats), streaming one file at a time.

    All inputs are opened and checked and all output names are checked before anything is written.
    Yields one summary per file: path, output, shape, seconds, and the blend's weight applied. `tta`: average each tile's reconstruction over the
    rotations and flips the noise allows (`engine.tta`), at about eight times the passes. `blend`: move the
    reconstruction towards the measurement by the weight `fit` recorded (`Reconstructor.blend`); False for the rule's
    reconstruction alone.
    """
    state = checkpoint.load(run)
    paths = find_inputs(list(inputs), glob, stdin)
    outdir = Path(outdir)
    dests = _outputs(paths, outdir, overwrite)
    given = parse_noise(noise) if noise is not None else None  # a bad spec fails before anything is written
    shapes = _check_all(paths)
    _check_noise_frames(given, paths, shapes)
    noise_for = _recorded_noise(state, given, paths, shapes)
    rec = _reconstructor(state, device, tile_size, test_samples, tta, blend)
    seed = int(state["config"].get("seed", 0))
    label = f"{state['loss']} denoised"
    for path, dest in zip(paths, dests):
        with open_image(path) as raw:
            t0 = time.perf_counter()
            img = HotRepaired(raw)
            s = file_seed(seed, img.path.name)
            nm = noise_for(img)
            frames = (rec.predict(img.frame(i), frame_model(nm, i), seed=s + i) for i in range(img.n_frames))
            write_like(dest, frames, raw, dtype=dtype, overwrite=overwrite, label=label)
            record_output(dest)
            yield {"path": str(img.path), "output": str(dest), "shape": [img.n_frames, *img.shape],
                   "seconds": round(time.perf_counter() - t0, 3), "blend": rec.alpha, "noise": nm.to_dict(),
                   **({"hot_pixels": img.hot} if img.hot else {})}


def _check_noise_frames(given, paths: list[Path], shapes: list[tuple[int, tuple[int, int]]]) -> None:
    """Before anything is written: a per-frame `--noise` fits every input's frame count."""
    for p, (n, _) in zip(paths, shapes):
        _check_frame_count(given, n, p)


def _reconstructor(state, device, tile_size, test_samples, tta: bool, blend: bool) -> Reconstructor:
    if test_samples is not None and test_samples < 1:
        raise ConfigError(f"--test-samples must be at least 1, not {test_samples}",
                          fix="give the number of passes to average, or leave it out to use the run's own")
    opts = {"test_samples": test_samples} if test_samples and "test_samples" in state["loss_options"] else None
    return Reconstructor.from_checkpoint(state, resolve_device(device), tile_size=tile_size, loss_options=opts, tta=tta,
                                         blend=blend)


def validate(run: str | Path, inputs: Iterable[str], *, reference: str | Path | None = None,
             data_range: float | None = None, noise: str | None = None, tile_size: int | None = None,
             tta: bool = True, blend: bool = True, device: str = "auto", glob: str | None = None,
             stdin: Iterable[str] | None = None) -> dict:
    """Estimate the reconstruction quality on held-out measurements without ground truth.

    Per file: `estimated_mse` (the loss's self-supervised risk estimate of the test-time
    reconstruction, data units^2) and `estimated_psnr` (None, with a `warning`, where the estimate is
    not positive: the noise model overstates the noise); with `reference` (a folder of files with
    the same names), also the true `psnr` and `ssim`. Top-level keys hold the means over files.
    PSNR's data range (`data_range` in each file's entry, one for both PSNRs): the dtype's full range for integer
    data, max - min of the reference (without one, of the measurement) for float data; `data_range` overrides it.
    `tta` and `blend` as `reconstruct`'s: the estimate is of the reconstruction `reconstruct` makes with the same
    settings.
    """
    state = checkpoint.load(run)
    paths = find_inputs(list(inputs), glob, stdin)
    refs = _references(paths, reference) if reference is not None else [None] * len(paths)
    given = parse_noise(noise) if noise is not None else None  # a bad spec fails before any work
    shapes = _check_all(paths)
    _check_noise_frames(given, paths, shapes)
    # each file's own report, as `--noise auto` (without an offset) makes it, is also what `_risk_kernel` reads
    reports: dict[Path, NoiseReport] = {}
    unfit: set[Path] = set()  # files not trained on that the run's model does not fit: their own estimate
    noise_for = _recorded_noise(state, given, paths, shapes, reports if given == AutoNoise() else None, unfit)
    if reference is not None:
        for p, ref, shape, ref_shape in zip(paths, refs, shapes, _check_all(refs)):
            if shape != ref_shape:
                raise InputError(f"reference shape {ref_shape} differs from the measurement's {shape} ({p})",
                                 path=ref, fix="pass references of the same size as the measurements")
    rec = _reconstructor(state, device, tile_size, None, tta, blend)
    seed = int(state["config"].get("seed", 0))
    files = []
    for path, ref_path in zip(paths, refs):
        with ExitStack() as stack:
            img = HotRepaired(stack.enter_context(open_image(path)))
            ref = stack.enter_context(open_image(ref_path)) if ref_path else None
            nm = noise_for(img)  # (a loss's own risk, gr2r-poisson's, takes no correlation term)
            measured = (given is None or isinstance(given, AutoNoise)) and not rec.loss.own_risk
            kernel = _risk_kernel(img, nm, reports.get(Path(img.path).resolve())) if measured else None
            files.append(_validate_file(rec, img, ref, nm, seed, data_range, kernel))
            if Path(img.path).resolve() in unfit:
                files[-1]["note"] = ("the run's noise model does not fit this file's own estimate (another session, "
                                     "gain or dark level?), so the file's own is used")
    keys = [k for k in files[0] if k not in ("path", "reference", "noise", "noise_correlation_kernel", "warning",
                                              "note")]
    return {"run": str(run), "noise_spec": noise or "recorded", "tta": tta, "blend": rec.alpha,
            **{k: _mean_or_none([f[k] for f in files]) for k in keys}, "files": files}


def _mean_or_none(values: list) -> float | None:
    """The mean of the values that exist (an estimated PSNR is missing where the risk estimate was not positive)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _risk_kernel(img: ImageFile, nm: NoiseModel | PerFrame,
                 report: NoiseReport | None = None) -> tuple[tuple[float, ...], ...] | None:
    """The correlation kernel of a file's noise where its model is white and signal-dependent but the file's own
    noise report (as `--noise auto` makes it; `report` where already made) finds the noise correlated
    (`NoiseReport.risk_kernel`): the risk estimate counts it, while training kept the white model. None elsewhere."""
    if isinstance(nm, PerFrame) or nm.name not in ("poisson", "pg"):
        return None
    return (report or _file_report(img, None)).risk_kernel


def _validate_file(rec: Reconstructor, img: ImageFile, ref: ImageFile | None, nm: NoiseModel | PerFrame,
                   seed: int, data_range: float | None, kernel: tuple[tuple[float, ...], ...] | None = None) -> dict:
    s = file_seed(seed, img.path.name)
    rows = []
    for i in range(img.n_frames):
        y = img.frame(i)
        model = frame_model(nm, i)
        mse, xhat = rec.risk(y, model, seed=s + i, correlation=None if kernel is None else with_kernel(model, kernel))
        x = None if ref is None else np.asarray(ref.frame(i), np.float64)
        # one range for both PSNRs: the reference's where there is one (float data: max - min of the reference, of
        # the measurement without one, which noise widens: 9-10 dB apart on Poisson-Gaussian counts)
        r = data_range or (default_data_range(img.dtype, y) if x is None else default_data_range(ref.dtype, x))
        row = {"estimated_mse": mse, "estimated_psnr": psnr_from_mse(mse, r) if mse > 0 else None, "data_range": r}
        if x is not None:
            row.update(psnr=psnr(x, xhat, r), ssim=ssim(x, xhat, r))
        rows.append(row)
    entry = {"path": str(img.path), "noise": nm.to_dict(), **{k: _mean_or_none([r[k] for r in rows]) for k in rows[0]}}
    if kernel is not None:
        entry["noise_correlation_kernel"] = [list(r) for r in kernel]
    if entry["estimated_mse"] <= 0:
        entry["warning"] = ("the risk estimate is not positive, so the noise model overstates this file's noise "
                            "(see `sslrecon noise`, or pass --noise)")
    if ref is not None:
        entry["reference"] = str(ref.path)
    return entry


def _references(paths: list[Path], reference: str | Path) -> list[Path]:
    ref_dir = Path(reference)
    if not ref_dir.is_dir():
        raise InputError("--reference must be a folder of clean images", path=ref_dir, fix="pass a folder")
    refs, missing = [], []
    for p in paths:
        r = ref_dir / p.name
        (refs if r.is_file() else missing).append(r)
    if missing:
        raise InputError(f"no reference named {missing[0].name} for measurement "
                         f"{paths[[ref_dir / p.name for p in paths].index(missing[0])]}", path=ref_dir,
                         fix="give each measurement a reference file of the same name")
    return refs
