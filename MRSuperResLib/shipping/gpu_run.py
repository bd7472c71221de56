"""The GPU run: one command that spends a lent GPU machine's few minutes on the CUDA checks and on
training the x4 fidelity model at GPU scale, and returns what it made in at most 8 files of at most
16 MiB (docs/gpu_run.md). Nothing in it needs a GPU, so the tests rehearse it on the CPU.

    python scripts/maintainers/gpu_run.py --out DIR            # or OUT=DIR; on the machine: gpu_run.sh
    python scripts/maintainers/gpu_run.py join DIR --to RUN    # here, after: the weights bit for bit

The budget (default 510 s, inside a call limited to about 540 s) is split by deadlines, not by
hopes: the checks (gpu_check.py) get at most `--check-seconds` and are ended with their children
after it (their JSON is rewritten after each step, so what they measured comes back); training
(`mrsuperres train` with the recipe's fidelity-v2 options, batch 16, patch 128, precision measured)
is asked to stop by a STOP file when only the ranking and the packing time are left; the kept
checkpoints (EMA and raw generator) are ranked beside the shipped model by the shipping protocol
(rank_checkpoints) on the validation subjects; the best is saved as a model with its card and
split into parts with their sha256.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes
from ..options import MRI_DEFAULT_MODEL, PROJECT_DIR
from .gpu_pack import DEFAULT_PACK, recipe, recipe_volumes, unpack
from .split_files import join_file, manifest_path, parts_needed, read_manifest, split_file

GPU_CHECK = PROJECT_DIR / "scripts" / "maintainers" / "gpu_check.py"
MAX_FILES = 8                            # what comes back from the machine: files, and bytes each
MAX_FILE = 16 * 2**20
MAX_PART = MAX_FILE - 4096               # the weights' parts stay under the limit
CHECKS, EVENTS, TABLE, LOG, WEIGHTS = "gpu_check.json", "events.jsonl", "validation.md", "gpu_run.log", \
    "model.safetensors"
FIXED = (CHECKS, EVENTS, TABLE, f"{WEIGHTS}.manifest.json")     # beside the weights' parts (and the log)
RUN_NAME = f"{MRI_DEFAULT_MODEL}-gpu"


class Budget:
    """The run's deadlines (time.time()), all from one start, so that a slow step takes from training,
    never from the ranking or the packing of what was trained."""

    def __init__(self, total: float, checks: float, rank: float, finish: float, start: float | None = None):
        self.start = time.time() if start is None else start
        self.total = total
        self.rank = self.start + total - finish
        self.train = self.rank - rank
        if self.train <= self.start:
            raise MRSuperResError(f"a budget of {total:g} s leaves no time to train after {rank:g} s of ranking "
                                  f"and {finish:g} s of finishing")
        self.checks = min(self.start + checks, self.train)


class Log:
    """Lines to stdout and into the returned log (capped below the transfer limit)."""

    def __init__(self, path: Path, cap: int = MAX_FILE - 2**20):
        self.path, self.cap, self.written = path, cap, 0
        self.file = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        with self.lock:
            sys.stdout.write(text)
            sys.stdout.flush()
            if self.written + len(text) <= self.cap:
                self.file.write(text)
                self.file.flush()
                self.written += len(text)

    def say(self, text: str) -> None:
        self.write(f"gpu_run [{time.strftime('%H:%M:%S')}]: {text}\n")

    def pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.write(raw.decode(errors="replace"))

    def close(self) -> None:
        self.file.close()


def run_child(cmd: list[str], log: Log, deadline: float, env: dict, stop=None, grace: float = 0.0) -> tuple:
    """(exit status, how it ended) of `cmd`, run in a process group of its own with its output in the
    log. At `deadline`, `stop()` is called every half second for `grace` seconds (a trainer still
    starting deletes an early STOP file), then the group gets SIGTERM and, 10 s later, SIGKILL, so
    that no child of a check still holds the GPU while training runs."""
    proc = subprocess.Popen(cmd, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pump = threading.Thread(target=log.pump, args=(proc.stdout,), daemon=True)
    pump.start()
    how = "finished"
    while proc.poll() is None:
        now = time.time()
        if now >= deadline:
            if stop is not None and now < deadline + grace:
                stop()
                how = "asked to stop at its deadline"
            else:
                how = "ended at its deadline"
                _signal_group(proc.pid, signal.SIGTERM if now < deadline + grace + 10 else signal.SIGKILL)
        time.sleep(0.5)
    _signal_group(proc.pid, signal.SIGKILL)          # whatever it started and left behind
    pump.join(timeout=5)
    return proc.returncode, how


def _signal_group(pid: int, sig) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reader_env(pack: Path, work: Path, log: Log) -> dict:
    """The children's environment. Where nibabel or pynrrd is missing (the GPU machine), the packed
    wheels are installed into work/site first and put on the path, here and for the children."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if all(importlib.util.find_spec(m) for m in ("nibabel", "nrrd")):
        return env
    site = work / "site"
    wheels = sorted(str(p) for p in (pack / "wheels").glob("*.whl"))
    if not wheels:
        raise MRSuperResError(f"nibabel or pynrrd is missing here and {pack}/wheels holds no wheels (gpu_pack.py)")
    log.say(f"installing {', '.join(Path(w).name for w in wheels)} into {site}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--target", str(site), *wheels], check=True)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def training_command(args, volumes: dict[str, Path], run_dir: Path) -> list[str]:
    """`mrsuperres train` as the recipe's stage runs it, with a GPU's batch, patch and measured
    precision, and no iteration limit (the deadline stops it); `--train`/`--val` replace the volumes."""
    known = {f"$DATA/{name}": str(path) for name, path in volumes.items()}
    cmd = [sys.executable, "-m", "MRSuperResLib", "train", *(known.get(a, a) for a in recipe())]
    if args.train:
        cmd += ["--data", *map(str, args.train)]
    if args.val:
        cmd += ["--val", *map(str, args.val)]
    cmd += ["--init", args.init, "--device", args.device, "--batch", str(args.batch), "--patch", str(args.patch),
            "--precision", "auto", "--iters", "1000000", "--checkpoint-every", str(args.checkpoint_every),
            "--val-every", str(args.checkpoint_every), "--keep", str(args.keep), "--out", str(run_dir)]
    if args.lr:
        cmd += ["--lr", str(args.lr)]
    return cmd + shlex.split(args.train_args)


def rank(run_dir: Path, volumes: list[Path], against: str, every: int, last: int, deadline: float, log: Log) -> list:
    """Scores ({spec, psnr: [gain per subject], ssim: [...], mean}) of the newest checkpoint's EMA and
    raw generator and the shipped model (always), then older kept ones while the deadline allows; by
    the shipping protocol (rank_checkpoints.gains: gains over bicubic, one slice in `every`)."""
    from ..models.candidates import load_network
    from .rank_checkpoints import candidates, gains

    specs = candidates(run_dir, None, last)
    order = list(dict.fromkeys(specs[-2:] + [against] + specs[:-2][::-1]))
    rows = []
    for i, spec in enumerate(order):
        if i >= 3 and time.time() > deadline:
            log.say(f"not scored (ranking deadline): {spec}")
            continue
        try:
            per = gains(load_network(spec), volumes, every)
        except Exception as exc:                     # one candidate that cannot be scored stops no other
            log.say(f"could not score {spec}: {type(exc).__name__}: {exc}")
            continue
        psnr, ssim = [round(p, 4) for p, _ in per], [round(s, 5) for _, s in per]
        rows.append({"spec": spec, "psnr": psnr, "ssim": ssim, "mean": round(sum(psnr) / len(psnr), 4)})
        log.say(f"scored {spec}: mean {rows[-1]['mean']:+.3f} dB over bicubic")
    return rows


def verdict(best: dict, shipped: dict | None) -> dict | None:
    """ship_model's rule (decide: mean gain over the shipped model > 0, no subject worse than -0.1 dB)
    on the ranking's slices: a first word; ship_model.py scores every slice before anything ships."""
    from .ship_model import decide

    if shipped is None:
        return None
    rows = [{"gain_over_previous": {"psnr": a - b}} for a, b in zip(best["psnr"], shipped["psnr"])]
    return decide(rows, MRI_DEFAULT_MODEL, has_previous=True)


def training_facts(events: list[dict]) -> dict:
    """What the events log says about the run: iterations, seconds, speed, precision and why."""
    start = next((e for e in events if e["event"] in ("start", "resumed")), {})
    end = next((e for e in reversed(events) if e["event"] in ("done", "stopped", "error")), {})
    speeds = [e["its_per_sec"] for e in events if e["event"] == "progress" and e.get("its_per_sec")]
    config = start.get("config", {})
    wall = end.get("wall_seconds") or (round(end["time"] - start["time"], 1) if end and start else None)
    return {"iterations": end.get("iter"), "ended": end.get("event"), "reason": end.get("reason") or end.get("message"),
            "wall_seconds": wall,
            "its_per_sec": round(speeds[-1], 3) if speeds else None,
            "precision": start.get("precision"), "precision_why": start.get("precision_why"),
            "device": start.get("device"), "batch": config.get("batch"), "patch": config.get("patch"),
            "lr": start.get("lr"), "train_slices": start.get("train_slices")}


def write_table(path: Path, rows: list, volumes: list[Path], facts: dict, checks: dict, best, decision, every: int,
                returned: str | None) -> None:
    """The validation table (markdown): each candidate's PSNR / SSIM gains over bicubic per subject."""
    names = [p.name.split(".")[0] for p in volumes]
    checked = (f"Checks ({CHECKS}): {checks['steps']} steps, failed: {checks['failed']}, "
               f"finished: {checks['finished']} ({checks['ended']}, exit {checks['exit']})")
    lines = [f"# GPU run, {time.strftime('%Y-%m-%d %H:%M')}", "",
             "Training: " + ", ".join(f"{k} {v}" for k, v in facts.items() if v is not None), "", checked, "",
             (f"Gain over bicubic, PSNR dB / SSIM, one non-blank axial slice in {every} of each validation subject "
              "(rank_checkpoints' protocol):"), "",
             f"| candidate | {' | '.join(names)} | mean |", f"|---|{'---|' * len(names)}---|"]
    for row in sorted(rows, key=lambda r: -r["mean"]):
        cells = " | ".join(f"{p:+.3f} / {s:+.4f}" for p, s in zip(row["psnr"], row["ssim"]))
        lines.append(f"| {row['spec'].rsplit('/', 1)[-1]} | {cells} | {row['mean']:+.3f} |")
    against = (f"Against the shipped model, by ship_model's rule on these slices: {decision['reason']}" if decision
               else "No shipped model was scored beside it.")
    lines += ["", f"Best candidate: {best['spec'] if best else 'none'}" + (f"; returned as {returned}" if returned else ""),
              against, "",
              ("Join, then rank with every slice: `python scripts/maintainers/gpu_run.py join RESULTS --to RUN`, "
               f"`python scripts/maintainers/ship_model.py RUN --name {MRI_DEFAULT_MODEL} --dry-run`")]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def export_best(run_dir: Path, spec: str, work: Path, out: Path, max_part: int, **extra) -> dict:
    """The chosen network saved in fp16 as a model with its card (as it would ship), split into `out`."""
    from ..models.checkpoints import checkpoint_generator
    from ..models.weights import save_model

    _, it, weights = spec.rsplit(":", 2)
    model, card = checkpoint_generator(run_dir, int(it), weights)
    (work / "export").mkdir(parents=True, exist_ok=True)
    path = work / "export" / WEIGHTS
    saved = save_model(model.half(), path, card)
    if parts_needed(path.stat().st_size, max_part) + len(FIXED) > MAX_FILES:
        raise MRSuperResError(f"{path.stat().st_size} bytes in parts of {max_part} would pass {MAX_FILES} files")
    return split_file(path, out, max_part, card=saved, candidate=spec, **extra)


def run(args) -> int:
    """The run; exit status 0 when the weights came back and every check passed, 2 when the weights
    came back but a check failed or was cut short, 1 when no weights came back."""
    budget = Budget(args.budget, args.check_seconds, args.rank_seconds, args.finish_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*FIXED, LOG, *(p.name for p in out.glob(f"{WEIGHTS}.part*"))]:   # this run's files alone
        (out / old).unlink(missing_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mrsuperres-gpu-run-"))
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / LOG)
    log.say(f"budget {args.budget:.0f} s on {args.device}: checks until +{budget.checks - budget.start:.0f} s, "
            f"training until +{budget.train - budget.start:.0f} s, ranking until +{budget.rank - budget.start:.0f} s")
    pack = Path(args.pack)
    env = reader_env(pack, work, log)
    volumes = unpack(pack, work / "data") if (pack / "pack.json").exists() else {}
    if not volumes and not (args.train and args.val):
        raise MRSuperResError(f"no pack at {pack} (scripts/maintainers/gpu_pack.py makes it) and no --train/--val")

    code, how = run_child([sys.executable, str(GPU_CHECK), "--device", args.device, "--model", args.init,
                           "--json", str(out / CHECKS), *shlex.split(args.check_args)], log, budget.checks, env)
    report = json.loads((out / CHECKS).read_text()) if (out / CHECKS).exists() else {}
    failed = [k for k, v in report.get("steps", {}).items() if not v.get("ok")]
    checks = {"exit": code, "ended": how, "steps": len(report.get("steps", {})), "failed": failed or "none",
              "finished": report.get("finished", False)}
    log.say(f"checks {how} (exit {code}): {checks}")
    if not (out / CHECKS).exists():       # ended before its first step: the file says so, and every run returns it
        atomic_write_bytes(out / CHECKS, json.dumps({"device": args.device, "steps": {}, "finished": False,
                                                     "ended": how, "exit": code}, indent=2).encode())

    run_dir = work / RUN_NAME
    code, how = run_child(training_command(args, volumes, run_dir), log, budget.train, env,
                          stop=lambda: (run_dir / "STOP").touch() if run_dir.is_dir() else None, grace=args.stop_grace)
    from ..events import read_events

    events = read_events(run_dir / "events.jsonl") if (run_dir / "events.jsonl").exists() else []
    if events:
        shutil.copyfile(run_dir / "events.jsonl", out / EVENTS)
    facts = training_facts(events)
    log.say(f"training {how} (exit {code}): {facts}")

    names = recipe_volumes(recipe())["val"]
    val = [Path(p) for p in args.val] if args.val else [volumes[n] for n in names]
    rows, best, decision, manifest = [], None, None, None
    try:
        rows = rank(run_dir, val, args.init, args.rank_every, args.rank_last, budget.rank, log)
        ours = [r for r in rows if r["spec"] != args.init]
        if ours:
            best = max(ours, key=lambda r: r["mean"])
            decision = verdict(best, next((r for r in rows if r["spec"] == args.init), None))
            manifest = export_best(run_dir, best["spec"], work, out, args.part_bytes, checks=checks, training=facts,
                                   ranking=rows, decision=decision)
            log.say(f"best {best['spec']}: {WEIGHTS} in {len(manifest['parts'])} parts, sha256 {manifest['sha256']}")
    except Exception as exc:                               # no checkpoint, or worse: the table and log say so
        import traceback

        log.write(traceback.format_exc())
        log.say(f"no weights returned: {type(exc).__name__}: {exc}")
    write_table(out / TABLE, rows, val, facts, checks, best, decision, args.rank_every,
                f"{WEIGHTS} (sha256 {manifest['sha256'][:16]}...)" if manifest else None)
    log.say(f"done in {time.time() - budget.start:.0f} s of {args.budget:.0f}; results in {out}")
    log.close()
    files = sorted(p for p in out.iterdir() if p.is_file())
    if len(files) > MAX_FILES:                             # the log goes first: the rest is what matters
        (out / LOG).unlink()
        files = sorted(p for p in out.iterdir() if p.is_file())
    too_big = [p.name for p in files if p.stat().st_size > MAX_FILE]
    if too_big or len(files) > MAX_FILES:
        raise MRSuperResError(f"results break the transfer limits: {len(files)} files, too big: {too_big}")
    return 1 if manifest is None else 0 if not failed and checks["finished"] else 2


def join(results: Path, to: Path) -> Path:
    """RUN/model.safetensors (bit for bit, every sha256 checked), its card and the run's events log,
    so that ship_model.py RUN can rank it by the full protocol and ship it."""
    from ..models.cards import write_card

    found = manifest_path(results, WEIGHTS)
    manifest = read_manifest(found)
    to.mkdir(parents=True, exist_ok=True)
    path = join_file(found, to / WEIGHTS)
    write_card(path, manifest["card"])
    if (results / EVENTS).exists():
        shutil.copyfile(results / EVENTS, to / EVENTS)
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("MRSUPERRES_GPU_OUT") or os.environ.get("OUT"),
                   help="the results folder (default: $MRSUPERRES_GPU_OUT, else $OUT)")
    p.add_argument("--pack", default=str(PROJECT_DIR / DEFAULT_PACK), help="what gpu_pack.py packed (carried)")
    p.add_argument("--work", default=None, help="run folder's parent (default: a new temporary folder)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=510, help="seconds for everything: leave the call's limit some "
                   "30 s for starting Python, installing the wheels and a ranking that overruns (default 510)")
    p.add_argument("--check-seconds", type=float, default=200, help="at most this for gpu_check.py")
    p.add_argument("--rank-seconds", type=float, default=75, help="kept for ranking after training")
    p.add_argument("--finish-seconds", type=float, default=25, help="kept for saving, splitting, writing")
    p.add_argument("--stop-grace", type=float, default=45, help="after STOP, the trainer's time to save and export")
    p.add_argument("--check-args", default="", help="more gpu_check.py options (quoted)")
    p.add_argument("--init", default=MRI_DEFAULT_MODEL, help="the model training continues (and the checks use)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    p.add_argument("--checkpoint-every", type=int, default=250, help="iterations between checkpoints and validations")
    p.add_argument("--keep", type=int, default=6)
    p.add_argument("--train", nargs="+", default=None, help="training volumes instead of the recipe's")
    p.add_argument("--val", nargs="+", default=None, help="validation volumes instead of the recipe's")
    p.add_argument("--train-args", default="", help="more `mrsuperres train` options (quoted), last")
    p.add_argument("--rank-every", type=int, default=2, help="score one slice in N")
    p.add_argument("--rank-last", type=int, default=4, help="newest N kept checkpoints (EMA and raw) ranked")
    p.add_argument("--part-bytes", type=int, default=MAX_PART, help="the weights' parts, at most")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["join"]:
            j = argparse.ArgumentParser(description="join the returned weights into RUN")
            j.add_argument("results", type=Path)
            j.add_argument("--to", type=Path, default=None, help="the run folder to write (default: RESULTS/run)")
            a = j.parse_args(argv[1:])
            path = join(a.results, a.to or a.results / "run")
            print(f"{path}: joined and checked; rank it: python scripts/maintainers/ship_model.py {path.parent} "
                  f"--name {MRI_DEFAULT_MODEL} --dry-run")
            return 0
        args = parser().parse_args(argv)
        if not args.out:
            raise MRSuperResError("no results folder: give --out DIR or set MRSUPERRES_GPU_OUT (or OUT)")
        return run(args)
    except MRSuperResError as exc:
        print(f"gpu_run: {exc}", file=sys.stderr)
        return 1
