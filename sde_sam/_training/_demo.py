"""The quick demo: every variant on the digits MLP, a table of final loss, accuracy and time per step."""

from __future__ import annotations

import jax.random as jr
from tqdm import tqdm

from .. import problems, variants
from .._estimators._observables import observables
from .._problems._sampler import WithoutReplacement
from ._runner import run_discrete
from ._timing import time_per_step


def demo_variants(rho: float = 0.05, micro_batch_size: int = 16) -> list:
    """The variant list of the demo and benchmarks: every method at comparable settings."""
    return [
        variants.sgd(),
        variants.usam(rho * 10),
        variants.sam(rho),
        variants.n_usam(rho * 10),
        variants.n_sam(rho),
        variants.m_usam(rho * 10, micro_batch_size),
        variants.m_sam(rho, micro_batch_size),
        variants.f_usam(rho * 10),
        variants.f_sam(rho),
        variants.sam_on(rho * 10),
        variants.rw_usam(rho * 10),
        variants.rw_sam(rho),
        variants.rw_sam(rho, weights_in_descent=True).replace(name="RW-SAM (weighted descent)"),
    ]


def run_demo(
    steps: int = 200, batch_size: int = 128, eta: float = 0.1, num_runs: int = 2, seed: int = 0, progress: bool = True
) -> list[dict]:
    """Train the digits MLP with every variant and return one row per variant."""
    problem = problems.digits_mlp(hidden=64, seed=seed)
    sampler = WithoutReplacement(batch_size)
    record = observables("loss", "accuracy", "test_accuracy", every=steps)
    rows = []
    for variant in tqdm(demo_variants(), desc="variants", disable=not progress):
        runs = run_discrete(
            problem, variant, sampler, eta=eta, steps=steps, num_runs=num_runs, key=jr.key(seed), record=record
        )
        rows.append(
            {
                "variant": variant.name,
                "rho": variant.rho,
                "final_loss": float(runs.mean("loss")[-1]),
                "train_accuracy": float(runs.mean("accuracy")[-1]),
                "test_accuracy": float(runs.mean("test_accuracy")[-1]),
                "ms_per_step": 1e3 * time_per_step(problem, variant, sampler, repeats=5, steps=20),
                "diverged": runs.num_diverged,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'variant':<28}{'rho':>6}{'loss':>9}{'train acc':>11}{'test acc':>10}{'ms/step':>9}{'x SGD':>7}"
    sgd = rows[0]["ms_per_step"]
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['variant']:<28}{r['rho']:>6.2g}{r['final_loss']:>9.4f}{r['train_accuracy']:>11.3f}"
            f"{r['test_accuracy']:>10.3f}{r['ms_per_step']:>9.2f}{r['ms_per_step'] / sgd:>7.2f}"
        )
    return "\n".join(lines)
