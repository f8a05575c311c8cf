"""What the end of training now does for objective=contrastive with several heads, applied to runs
trained before it: the head whose clusters the run's own embedding supports best (``structure``)
becomes the checkpoint's best head (vtcc.train.supported_head; labels choose nothing). Evaluate
the runs afterwards with vtcc-eval. The training itself does not depend on the choice (the heads'
losses are averaged whichever head is best).

Usage: .venv/bin/python scripts/choose_supported_head.py <run folder> [...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vtcc.build import build_data, restore_run
from vtcc.train import supported_head
from vtcc.utils.checkpoint import record_best_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    for run in parser.parse_args().runs:
        checkpoint = run / "checkpoints" / "last.ckpt"
        run_cfg, module = restore_run(checkpoint)
        before = int(module.network.best_head)
        datamodule = build_data(run_cfg, module.network)
        datamodule.setup("validate")
        head, scores = supported_head(module.network, datamodule, "cpu", run_cfg.get("seed") or 0)
        record_best_head(checkpoint, head)
        print(f"{run.name}: head {head} (lowest loss: {before}); structure {[round(s, 3) for s in scores]}")


if __name__ == "__main__":
    main()
