"""The estimated time of every stage of `make full`, per device, from measured costs.

    python benchmarks/full_cost.py [--rehearsal studies/rehearsal] [--gpu-check reports/gpu-check/gpu-check.json]

CPU: from a rehearsal (`make rehearse`): seconds per paper-tier optimiser step and per predicted
megapixel of every method, and the stages it does not cut, as measured. GPU: from `make gpu-check`'s
report, when you have one. How the counts scale up is in stfusion.rehearsal.estimate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stfusion.paths import code_root
from stfusion.pipeline.profiles import profile_params
from stfusion.rehearsal import estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rehearsal", type=Path, default=code_root() / "studies" / "rehearsal")
    parser.add_argument("--gpu-check", type=Path, default=code_root() / "reports" / "gpu-check" / "gpu-check.json")
    args = parser.parse_args()
    full = profile_params(code_root(), "full")
    scenes = estimate.full_scenes(full)
    print(f"make full: {', '.join(f'{d} {m:.2f} Mpx, {p} test pairs' for d, (m, p, _) in scenes.items())}; "
          f"{len(full['seeds'])} seeds, {len(full['ablation']['variants'])} ablation variants\n")
    devices = []
    if (args.rehearsal / "rehearsal.csv").is_file():
        devices.append(estimate.rehearsal_costs(args.rehearsal, full))
    if args.gpu_check.is_file():
        devices.append(estimate.gpu_costs(json.loads(args.gpu_check.read_text()), full))
    if not devices:
        raise SystemExit(f"no measurements: run `make rehearse` ({args.rehearsal}) or `make gpu-check` ({args.gpu_check})")
    for costs in devices:
        print(estimate.summary(estimate.estimate(full, costs, scenes), costs.device) + "\n")


if __name__ == "__main__":
    main()
