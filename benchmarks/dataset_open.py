"""Dataset browser at 10,000 images: time from "open folder" to the grid painted,
peak memory, and a find-and-replace over every caption (preview + apply + atomic
save of each file). Targets: <= 1 s to grid, <= 400 MB peak RSS, <= 2 s replace.

    python benchmarks/dataset_open.py [--images 10000] [--rounds 5] [--keep DIR]

The images are made in a temp folder once; each round then measures in a fresh
process (offscreen Qt) so its peak RSS is the browser's alone. The baselines, taken
in every round next to the measurement (which goes first alternates), are the bare
floors: listing the folder with os.walk and reading every caption file, with no GUI
at all, for the grid; rewriting every caption plainly for the find-and-replace. The
headlines are the medians over rounds, the ratios the medians of per-round ratios,
and the targets are judged on the medians."""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._stats import figure, summarize, verdict  # noqa: E402

TAGS = ["1girl", "solo", "smile", "long hair", "blue eyes", "outdoors", "sky", "red dress",
        "cat", "tree", "night", "city", "portrait", "upper body", "looking at viewer"]


def make_dataset(root: Path, n: int) -> None:
    from PIL import Image
    root.mkdir(parents=True, exist_ok=True)
    sub = root / "5_sks style"  # a kohya repeat folder, as real datasets have
    sub.mkdir(exist_ok=True)
    for i in range(n):
        folder = sub if i % 4 == 0 else root
        w, h = (96, 64) if i % 3 else (64, 96)
        buf = io.BytesIO()
        Image.new("RGB", (w, h), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)).save(buf, "JPEG", quality=80)
        (folder / f"img_{i:05d}.jpg").write_bytes(buf.getvalue())
        tags = ["sks"] + [TAGS[(i + k * 5) % len(TAGS)] for k in range(3)] + TAGS[i % 7:i % 7 + 4]
        (folder / f"img_{i:05d}.txt").write_text(", ".join(tags), encoding="utf-8")


def baseline(root: Path) -> float:
    t = time.perf_counter()
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".txt"):
                with open(os.path.join(dirpath, name), "rb") as fh:
                    fh.read()
                n += 1
    return time.perf_counter() - t


def write_baseline(root: Path) -> float:
    """The floor for saving: rewrite every caption in place, plainly (no temp file,
    no fsync, no rename), one after the other."""
    files = [Path(d) / n for d, _s, names in os.walk(root) for n in names if n.endswith(".txt")]
    texts = [f.read_bytes() for f in files]
    t = time.perf_counter()
    for f, data in zip(files, texts):
        with open(f, "wb") as fh:
            fh.write(data)
    return time.perf_counter() - t


def peak_rss_mb(children: bool = False) -> float:
    """Peak RSS of this process, or of its largest child (the health-check worker)."""
    try:
        import resource
        who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
        return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # Windows: no per-child figure
        import psutil
        return 0.0 if children else psutil.Process().memory_info().peak_wset / 2**20


def measure(root: Path) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from lora_studio.data.tags import find_replace_preview
    from lora_studio.ui.dataset_browser import DatasetBrowser

    class PaintSpy(QObject):
        painted = 0

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                self.painted += 1
            return False

    b = DatasetBrowser()
    b.resize(1400, 900)
    b.show()
    app.processEvents()
    spy = PaintSpy()
    b.grid.viewport().installEventFilter(spy)
    rss_before = peak_rss_mb()

    t0 = time.perf_counter()
    b.open_folder(root)
    while not spy.painted:
        app.processEvents()
    t_grid = time.perf_counter() - t0
    visible = [i for i in range(b.grid_model.rowCount())
               if b.grid.visualRect(b.grid_model.index(i)).intersects(b.grid.viewport().rect())]
    while not all(b.grid_model.cache.get(b.grid_model.keys[i]) for i in visible):
        app.processEvents()
        time.sleep(0.002)
    t_thumbs = time.perf_counter() - t0
    b.wait_for_captions()
    t_captions = time.perf_counter() - t0

    # scroll through the grid (every 25th screen) so the thumbnail cache is exercised
    step = max(1, len(visible)) * 25
    for row in range(0, b.grid_model.rowCount(), step):
        b.grid.scrollTo(b.grid_model.index(row))
        for _ in range(5):
            app.processEvents()
    b.loader.wait()
    app.processEvents()

    t1 = time.perf_counter()
    old, new = ("sks", "ohwx") if b.session.counts["sks"] else ("ohwx", "sks")  # a kept dataset
    changes = find_replace_preview(b.session.items(), old, new)
    t_preview = time.perf_counter() - t1
    b.apply_changes(changes, "Find and replace")  # autosave: atomic write of each file
    t_replace = time.perf_counter() - t1
    assert not b.session.dirty, "every changed caption was saved"
    health_done = not b.health.running
    b.shutdown()
    app.processEvents()
    return {"images": len(b.session), "changed": len(changes), "grid_s": t_grid,
            "first_screen_thumbs_s": t_thumbs, "captions_s": t_captions, "visible": len(visible),
            "replace_preview_s": t_preview, "replace_total_s": t_replace,
            "rss_before_open_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
            "health_worker_peak_rss_mb": peak_rss_mb(children=True), "health_done": health_done,
            "cache_items": len(b.grid_model.cache), "cache_mb": b.grid_model.cache.nbytes / 2**20}


def measure_in_child(root: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(root)],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds, each timing the baselines and the browser (the images are made once)")
    ap.add_argument("--keep", type=Path, help="make / reuse the dataset in this folder")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    runs: list[dict] = []
    bases: list[float] = []
    wbases: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "bench dataset"
        if not root.exists():
            t = time.perf_counter()
            make_dataset(root, args.images)
            print(f"made {args.images} JPEGs + captions in {time.perf_counter() - t:.1f} s")
        for i in range(args.rounds):
            # Alternating which goes first keeps a slow start of a round from always
            # landing on the same one. Each round's replace swaps sks and ohwx back and
            # forth, so every round changes every caption.
            if i % 2 == 0:
                bases.append(baseline(root))
                runs.append(measure_in_child(root))
                wbases.append(write_baseline(root))
            else:
                wbases.append(write_baseline(root))
                runs.append(measure_in_child(root))
                bases.append(baseline(root))
    if hasattr(os, "getloadavg"):
        print(f"machine load average (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    r = runs[-1]
    print(f"images: {r['images']}; {args.rounds} rounds, each with the baselines beside it")
    grid = summarize("open folder -> grid painted", [r["grid_s"] for r in runs], bases,
                     baseline="os.walk + read every caption, no GUI", unit="s")
    print(f"first screen of thumbnails ({r['visible']}): {figure(med('first_screen_thumbs_s'))} s; "
          f"all captions read, tag list and editor ready: {figure(med('captions_s'))} s (medians)")
    rss_runs = ", ".join(f"{x['peak_rss_mb']:.0f}" for x in runs)
    print(f"peak RSS: {med('peak_rss_mb'):.0f} MB median (rounds: {rss_runs}; "
          f"Qt + app before opening: {med('rss_before_open_mb'):.0f} MB; thumbnail cache "
          f"{r['cache_items']} items, {r['cache_mb']:.0f} MB); health-check child process peak: "
          f"{med('health_worker_peak_rss_mb'):.0f} MB")
    replace = summarize(f"find-and-replace over all captions ({r['changed']} changed files, "
                        f"preview {figure(med('replace_preview_s'))} s)",
                        [r["replace_total_s"] for r in runs], wbases,
                        baseline="plain rewrite of every caption, no temp file and no fsync", unit="s")
    verdict("open folder -> grid painted (median)", grid.median, 1.0, "s")
    verdict("peak RSS (median)", med("peak_rss_mb"), 400, "MB")
    verdict("find-and-replace (median)", replace.median, 2.0, "s")


if __name__ == "__main__":
    main()
