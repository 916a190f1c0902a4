"""`python -m bench.transfer SRC:TGT`: run one transfer pair (a stand-in until the main CLI
runs `--transfer`); prints the pair's table."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from bench.config import get_budget, parse_set_flags
from bench.transfer.track import pair_table, parse_pair, run_pair


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__)
    ap.add_argument("pair", help="SOURCE:TARGET")
    ap.add_argument("--adaptations", nargs="*", default=None, help="default: all registered")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--backbone", default="small-cnn")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--set", action="append", default=[], metavar="OWNER.KEY=VALUE")
    ap.add_argument("--no-resume", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source, target = parse_pair(args.pair)
    records = run_pair(source, target, seeds=args.seeds, budget=get_budget(args.budget), data_root=args.data_root,
                       results_dir=args.results, cache_dir=args.cache_dir, device=torch.device(args.device),
                       adaptations=args.adaptations, backbone=args.backbone, overrides=parse_set_flags(args.set),
                       resume=not args.no_resume)
    print(f"## {source} -> {target} ({args.budget})\n")
    print(pair_table(records))


if __name__ == "__main__":
    main()
