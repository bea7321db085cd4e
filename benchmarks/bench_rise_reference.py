"""Does RISE converge on the peer benchmark's model? Two high-budget maps against each other, and the budgets of
the peer table against both.

On the model and images of ``bench_peers`` (black fill, 7 cells, keep 0.5): fruitlens' RISE at ``--reference``
masks with seeds 99 and 98 (the two references), Xplique's ``Rise`` at the same budget (unseeded), then
fruitlens at 500, 1,333 and 4,000 masks (seeds 0 and 1) and Xplique at 4,000 (its default, twice), each against
both references. Distance: ``bench_peers.rel_l2`` (min-max scaled maps, relative L2, mean over images). If the two
references are far apart, the budgets below them cannot be ranked by their distance to either.

Run: ``python -m benchmarks.bench_rise_reference`` (Xplique from ``--peers``; writes
``benchmarks/results/rise_reference.json``).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._common import machine, write_result  # noqa: E402
from benchmarks.bench_peers import import_peers, rel_l2, train  # noqa: E402
from fruitlens.explain.perturbation import RISE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=32_000)
    parser.add_argument("--peers", default=os.environ.get("FRUITLENS_PEERS", "/work/peers"))
    args = parser.parse_args()
    missing = import_peers(args.peers)
    model, x, targets = train(argparse.Namespace(train_per_class=60, epochs=4, images=6))
    rise = lambda masks, seed: RISE(model, masks=masks, fill="black", seed=seed,  # noqa: E731
                                    round_size=min(masks, 1000)).explain(x, targets).heatmaps
    ref, ref2 = rise(args.reference, 99), rise(args.reference, 98)
    out = {"machine": machine(), "reference_masks": args.reference, "peers_missing": missing,
           "fruitlens_reference_vs_fruitlens_reference": rel_l2(ref, ref2), "rows": []}
    rows = [(f"fruitlens {m}, seed {s}", lambda m=m, s=s: rise(m, s)) for m in (500, 1333, 4000) for s in (0, 1)]
    if "xplique" not in missing:
        import tensorflow as tf
        import xplique.attributions as xa

        onehot = tf.one_hot(targets, int(model.output_shape[-1]))
        xrise = lambda n, b: np.asarray(xa.Rise(model, nb_samples=n, grid_size=7, preservation_probability=0.5,  # noqa: E731
                                                mask_value=0.0, batch_size=b).explain(x, onehot))
        out["xplique_reference_vs_fruitlens_reference"] = rel_l2(xrise(args.reference, 256), ref)
        rows += [(f"Xplique 4000 (default), run {r}", lambda: xrise(4000, 32)) for r in (1, 2)]
    for name, run in rows:
        maps = run()
        out["rows"].append({"run": name, "vs_reference_99": rel_l2(maps, ref), "vs_reference_98": rel_l2(maps, ref2)})
        print(out["rows"][-1], flush=True)
    print({k: v for k, v in out.items() if k != "rows"}, flush=True)
    write_result("rise_reference", out)


if __name__ == "__main__":
    main()
