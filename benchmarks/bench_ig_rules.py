"""Integrated Gradients: which placement and weighting of the path points gets closest with 17 passes?

On the demo CNN of ``bench_adaptive_gradients`` (same training), for ``--images`` demo images: the gradient of
the target's logit at 2,049 evenly spaced points of the path from black, once, and the logit at each; every
rule is then evaluated on subsets of those points (no further model passes), against the 2,049-point trapezoid
map. Error = ``||map - reference||_2 / ||reference||_2`` of the final heatmaps (positive part of the channel
sum, divided by the maximum), mean over images. Rules:

- ``trapezoid k``: k evenly spaced points (Xplique's ``linspace(0, 1, 50)`` + trapezoid rule is ``trapezoid 50``,
  computed at its own points);
- ``power p``: k points at u^p (denser near the black end);
- ``greedy``: 5 even points, then split the interval with the largest ``(b - a) ||x (g_b - g_a)||`` until k;
- ``completeness-weighted``: the trapezoid rule with each interval's two end weights replaced by lambda and
  1 - lambda, lambda chosen so that the interval's attributions sum to the logit's change over it (known from the
  forward values: exact where the gradient jumps once in the interval), clipped to [0, 1].

Run: ``python -m benchmarks.bench_ig_rules [--model peers]`` (writes ``benchmarks/results/ig_rules[_peers].json``).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks._common import machine, write_result  # noqa: E402
from benchmarks.bench_adaptive_gradients import trained_demo  # noqa: E402
from fruitlens.explain.base import gradient_fn, logits_fn, scale_per_image  # noqa: E402

DENSE = 2048  # intervals of the dense path


def along_path(model, image, target, alphas):
    """(K, H, W, 3) gradients and (K,) logits of the target at alphas x image."""
    grads, scores = gradient_fn(model), logits_fn(model)
    g, f = [], []
    for s in range(0, len(alphas), 256):
        x = tf.constant((alphas[s:s + 256, None, None, None] * image[None]).astype(np.float32))
        g.append(grads(x, tf.constant(np.full(len(x), target, np.int32)))[0].numpy())
        f.append(scores(x).numpy()[:, target])
    return np.concatenate(g), np.concatenate(f)


def trapezoid(alphas, g):
    w = np.zeros(len(alphas))
    d = np.diff(alphas)
    w[:-1] += d / 2
    w[1:] += d / 2
    return np.tensordot(w, g, 1)


def completeness_weighted(alphas, g, f, image):
    total = np.zeros_like(g[0])
    s = (image[None] * g).reshape(len(g), -1).sum(1)
    for j in range(len(alphas) - 1):
        width = alphas[j + 1] - alphas[j]
        slope = (f[j + 1] - f[j]) / width
        lam = 0.5 if abs(s[j] - s[j + 1]) < 1e-12 else (slope - s[j + 1]) / (s[j] - s[j + 1])
        lam = min(1.0, max(0.0, lam))
        total += width * (lam * g[j] + (1 - lam) * g[j + 1])
    return total


def greedy(contrib, k, start=5):
    nodes = list(np.linspace(0, DENSE, start).astype(int))
    while len(nodes) < k:
        score = [(b - a) * np.linalg.norm(contrib[b] - contrib[a]) if b - a > 1 else -1
                 for a, b in zip(nodes[:-1], nodes[1:], strict=True)]
        j = int(np.argmax(score))
        nodes = sorted([*nodes, (nodes[j] + nodes[j + 1]) // 2])
    return np.array(nodes)


def image_errors(model, image, target, dense) -> dict[str, float]:
    """Every rule's error on one image against its 2,049-point trapezoid map."""
    g, f = along_path(model, image, target, dense)

    def to_map(avg):
        return scale_per_image((image * avg).sum(-1)[None])[0]

    ref = to_map(trapezoid(dense, g))
    out = {}

    def add(name, avg):
        out[name] = float(np.linalg.norm(to_map(avg) - ref) / np.linalg.norm(ref))

    xp = np.linspace(0, 1, 50)
    add("trapezoid 50 (Xplique's default)", trapezoid(xp, along_path(model, image, target, xp)[0]))
    for k in (9, 17, 33):
        idx = np.linspace(0, DENSE, k).astype(int)
        add(f"trapezoid {k}", trapezoid(dense[idx], g[idx]))
        add(f"completeness-weighted {k}", completeness_weighted(dense[idx], g[idx], f[idx], image))
    for p in (1.5, 2.0):
        idx = np.unique(np.round(np.linspace(0, 1, 17) ** p * DENSE).astype(int))
        add(f"power {p}, 17", trapezoid(dense[idx], g[idx]))
    idx = greedy((image[None] * g).reshape(len(g), -1), 17)
    add("greedy 17", trapezoid(dense[idx], g[idx]))
    add("greedy 17, completeness-weighted", completeness_weighted(dense[idx], g[idx], f[idx], image))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--model", choices=("adaptive", "peers"), default="adaptive",
                        help="the model and images of bench_adaptive_gradients (default) or of bench_peers")
    args = parser.parse_args()
    if args.model == "peers":
        from benchmarks.bench_peers import train

        model, x, targets = train(argparse.Namespace(train_per_class=60, epochs=4, images=6))
    else:
        model, x, targets, _, _ = trained_demo(args.train_per_class, args.epochs, args.images)
    x = x.astype(np.float32)
    dense = np.linspace(0, 1, DENSE + 1)
    errors: dict[str, list[float]] = {}
    for i in range(len(x)):
        for name, err in image_errors(model, x[i], targets[i], dense).items():
            errors.setdefault(name, []).append(err)
    rows = [{"rule": k, "error_mean": round(float(np.mean(v)), 4), "error_max": round(float(np.max(v)), 4)}
            for k, v in errors.items()]
    for r in rows:
        print(f"{r['rule']:40s} {r['error_mean']:.4f} (max {r['error_max']:.4f})", flush=True)
    write_result("ig_rules" + ("_peers" if args.model == "peers" else ""),
                 {"machine": machine(), "model": args.model, "images": len(x), "rows": rows})


if __name__ == "__main__":
    main()
