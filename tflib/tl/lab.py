"""A budgeted in-silico lab: predict, test a few genes, revise the ranking, repeat (chapter 12).

The simulator plays the wet lab. A knockout "experiment" on a gene measures its true
fate-probability shift (:func:`tflib.datasets.knockout`) in a handful of replicate cells, adds
measurement noise and tests whether the gene lowers its own fate. A lab that can afford only
``budget`` knockouts per round chooses which genes to test with one of three strategies, and
the loop counts how many true regulators each strategy has found after every round.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.metrics.pairwise import rbf_kernel

STRATEGIES = ("adaptive", "fixed", "random")


class InSilicoLab:
    """Budgeted prediction -> experiment -> revision loop (chapter 12).

    Parameters
    ----------
    sim
        The AnnData of :func:`tflib.datasets.simulate` (needs ``obsm["fate_probs_true"]``).
        Never modified: the knockouts re-simulate futures without writing to it.
    scores
        One row per candidate gene (index: genes of ``sim.var_names``), one column per
        predictor; a higher score is a stronger claim that knocking the gene out lowers its
        fate. Column ``rank_by`` (default: the first) gives the fixed initial ranking.
    fate_of
        For every candidate, the fate (a column of ``obsm["fate_probs_true"]``) on which the
        gene is scored, as in chapter 12 (its module's fate, else the first fate).
    features
        Optional per-gene columns a lab knows before any experiment (e.g. log mean expression,
        detection rate, an ``is_tf`` annotation from a TF database). They inform only the
        adaptive revision model. Never pass the simulator's ``role``, ``module`` or GRN: that
        would be the answer itself.
    rank_by
        Column of ``scores`` that defines the initial ranking.
    budget, n_rounds
        Knockouts per round and number of rounds; ``budget * n_rounds`` genes are tested in
        all, each at most once.
    n_replicates, noise
        Replicate cells drawn per experiment, and the standard deviation of the Gaussian
        measurement noise added to each replicate's own-fate shift.
    alpha, effect
        An experiment is a hit when its BH q-value (within the round) is at most ``alpha`` and
        its mean measured shift is below ``-effect``. ``effect`` also defines the truth: a gene
        is *truly fate-changing* when its knockout's mean shift over all cells on its own fate
        is below ``-effect`` (chapter 12's definition, with 0.02).
    n_futures, seed
        Monte-Carlo size and seed of the knockouts; ``seed`` also drives the replicate draws,
        the noise and the random strategy. The same seed gives the same tables.
    prior_strength, gamma
        The adaptive model's Beta prior weight (pseudo-experiments) and RBF kernel width (on
        z-scored columns; default ``1 / n_columns``). See :meth:`revise`.

    Raises
    ------
    ValueError
        Empty, duplicated, unknown or non-finite candidates/scores/features, a ``fate_of`` that
        misses a candidate or names an unknown fate, ``budget < 1`` or a budget larger than the
        candidate list (``budget * n_rounds`` genes must exist to be tested).

    Examples
    --------
    >>> lab = InSilicoLab(sim, scores, fate_of=fate_of, features=feats, budget=4, n_rounds=3)  # doctest: +SKIP
    >>> lab.compare().groupby("strategy").cumulative_true.last()  # doctest: +SKIP

    Notes
    -----
    Why revising can pay: a model fitted to a snapshot ranks genes that *co-vary* with a fate
    (targets, housekeeping genes, decoy TFs) as high as the ones that *cause* it. The first
    round's misses are then mostly such genes, and the revision steers away from genes that
    resemble them (in score and expression) towards the rest of the list. In the chapter's
    small worlds this finds several times more true regulators than the fixed ranking or
    random picks for the same number of knockouts (``tests/test_lab.py``).
    """

    def __init__(self, sim, scores: pd.DataFrame, *, fate_of: Mapping[str, str],
                 features: pd.DataFrame | None = None, rank_by: str | None = None, budget: int = 4,
                 n_rounds: int = 4, n_replicates: int = 30, noise: float = 0.02, alpha: float = 0.1,
                 effect: float = 0.02, n_futures: int = 8, seed: int = 0, prior_strength: float = 2.0,
                 gamma: float | None = None):
        if "fate_probs_true" not in sim.obsm:
            raise ValueError("sim has no obsm['fate_probs_true']. Fix: pass the AnnData returned by "
                             "tflib.datasets.simulate (or its .h5ad read back).")
        fates = list(pd.DataFrame(sim.obsm["fate_probs_true"]).columns)
        if not isinstance(scores, pd.DataFrame) or scores.shape[0] == 0 or scores.shape[1] == 0:
            raise ValueError("scores must be a non-empty DataFrame (genes x predictors). Fix: e.g. "
                             "pd.DataFrame({'linear': -mean_predicted_shift}, index=candidates).")
        genes = pd.Index(scores.index.astype(str))
        if genes.has_duplicates:
            raise ValueError(f"scores has duplicated genes {list(genes[genes.duplicated()][:5])}. Fix: "
                             "one row per gene, e.g. scores[~scores.index.duplicated()].")
        unknown = genes.difference(pd.Index(sim.var_names))
        if len(unknown):
            raise ValueError(f"{len(unknown)} scored genes are not in sim.var_names, e.g. "
                             f"{list(unknown[:5])}. Fix: score genes of the simulated world only, e.g. "
                             "scores.loc[scores.index.isin(sim.var_names)].")
        self.scores = self._numeric(scores.set_axis(genes), "scores")
        rank_by = self.scores.columns[0] if rank_by is None else rank_by
        if rank_by not in self.scores.columns:
            raise ValueError(f"rank_by={rank_by!r} is not a column of scores {list(self.scores.columns)}. "
                             "Fix: name one of them.")
        missing = [g for g in genes if g not in fate_of]
        if missing:
            raise ValueError(f"fate_of misses {len(missing)} candidates, e.g. {missing[:5]}. Fix: give "
                             "every scored gene a fate (its module's fate, else the first fate).")
        bad = sorted({str(fate_of[g]) for g in genes if fate_of[g] not in fates})
        if bad:
            raise ValueError(f"fate_of names fates {bad[:5]} that are not in obsm['fate_probs_true'] "
                             f"{fates}. Fix: use those column names.")
        cols = self.scores
        if features is not None:
            feats = pd.DataFrame(features).set_axis(pd.Index(pd.DataFrame(features).index.astype(str)))
            absent = genes.difference(feats.index)
            if len(absent):
                raise ValueError(f"features lack {len(absent)} candidates, e.g. {list(absent[:5])}. "
                                 "Fix: one row per scored gene.")
            feats = self._numeric(feats.loc[genes], "features").add_prefix("feature_")
            cols = cols.join(feats)
        for name, value in (("budget", budget), ("n_rounds", n_rounds), ("n_replicates", n_replicates)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value}. Fix: e.g. {name}=4.")
        if n_replicates < 2:
            raise ValueError(f"n_replicates={n_replicates} leaves no variance to test. Fix: n_replicates >= 2.")
        if budget * n_rounds > len(genes):
            raise ValueError(f"a budget larger than the candidate list: budget * n_rounds = {budget} * "
                             f"{n_rounds} = {budget * n_rounds} knockouts but only {len(genes)} candidates. "
                             "Fix: lower budget or n_rounds, or score more candidates.")
        if not (noise >= 0 and 0 < alpha <= 1 and effect >= 0 and prior_strength > 0):
            raise ValueError(f"need noise >= 0, 0 < alpha <= 1, effect >= 0, prior_strength > 0; got "
                             f"{noise}, {alpha}, {effect}, {prior_strength}. Fix: e.g. the defaults.")
        self.sim, self.genes, self.fates, self.rank_by = sim, list(genes), fates, rank_by
        self.fate_of = {g: str(fate_of[g]) for g in genes}
        # z-scored columns of the revision model; a constant column carries no information
        sd = cols.std(ddof=0).replace(0.0, 1.0)
        self.design = (cols - cols.mean()) / sd
        self.budget, self.n_rounds, self.n_replicates = int(budget), int(n_rounds), int(n_replicates)
        self.noise, self.alpha, self.effect = float(noise), float(alpha), float(effect)
        self.n_futures, self.seed, self.prior_strength = int(n_futures), int(seed), float(prior_strength)
        self.gamma = 1.0 / self.design.shape[1] if gamma is None else float(gamma)
        self._knockouts: dict[str, pd.Series] = {}

    @staticmethod
    def _numeric(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        values = frame.apply(pd.to_numeric, errors="coerce").astype(float)
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            rows = list(values.index[bad.any(axis=1)][:5])
            raise ValueError(f"{name} has {int(bad.sum())} non-finite or non-numeric values (genes "
                             f"{rows}). Fix: drop those genes or fill the values, e.g. {name}.fillna(0).")
        return values

    # ---------------------------------------------------------------- the wet lab
    def _own_shift(self, gene: str) -> pd.Series:
        """Per-cell true shift of the gene's own fate; one knockout per gene, shared by all strategies."""
        if gene not in self._knockouts:
            from tflib.datasets import knockout

            ko = knockout(self.sim, gene, n_futures=self.n_futures, seed=self.seed)
            self._knockouts[gene] = ko[self.fate_of[gene]].astype(float)
        return self._knockouts[gene]

    def true_effect(self, genes: Sequence[str] | None = None) -> pd.Series:
        """Mean true own-fate shift over all cells (the truth the loop is scored on, not used to choose)."""
        genes = self.genes if genes is None else self._check_genes(genes)
        return pd.Series({g: float(self._own_shift(g).mean()) for g in genes}, name="true_mean_shift")

    def _check_genes(self, genes) -> list[str]:
        genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
        unknown = [g for g in genes if g not in self.fate_of]
        if unknown:
            raise ValueError(f"genes {unknown[:5]} are not candidates of this lab. Fix: test genes of "
                             "the scores' index.")
        if len(set(genes)) != len(genes):
            raise ValueError("a gene is listed twice. Fix: test each gene once per round.")
        return genes

    def experiment(self, genes) -> pd.DataFrame:
        """Knock ``genes`` out, measure replicates, test whether each lowers its own fate.

        For each gene, ``n_replicates`` cells are drawn without replacement (seeded by the lab
        seed and the gene's position in the candidate list, so a gene gets the same replicates
        whichever strategy or round tests it), Gaussian noise of sd ``noise`` is added to
        their true own-fate shifts, and a one-sided one-sample t-test (scipy) asks whether the
        mean is below 0. Q-values are Benjamini--Hochberg over the genes of this call
        (:func:`tflib.stats.fdr`), as one round's experiments are analysed together.

        Returns
        -------
        pandas.DataFrame
            One row per gene (index): ``fate``, ``mean_shift``, ``pvalue``, ``qvalue`` and
            ``hit`` (``qvalue <= alpha`` and ``mean_shift < -effect``).
        """
        from tflib.stats import fdr

        genes = self._check_genes(genes)
        rows = []
        for g in genes:
            shift = self._own_shift(g).to_numpy()
            rng = np.random.default_rng([self.seed, self.genes.index(g)])
            pick = rng.choice(len(shift), size=min(self.n_replicates, len(shift)), replace=False)
            measured = shift[pick] + rng.normal(0.0, self.noise, size=len(pick))
            if np.ptp(measured) == 0:  # noise=0 and identical cells: the t statistic is undefined
                p = 0.0 if measured[0] < 0 else 1.0
            else:
                p = float(sps.ttest_1samp(measured, 0.0, alternative="less").pvalue)
            rows.append({"gene": g, "fate": self.fate_of[g], "mean_shift": float(measured.mean()), "pvalue": p})
        out = pd.DataFrame(rows).set_index("gene")
        out["qvalue"] = fdr(out["pvalue"].to_numpy(), method="bh")
        out["hit"] = (out["qvalue"] <= self.alpha) & (out["mean_shift"] < -self.effect)
        return out

    # ---------------------------------------------------------------- the revision
    def revise(self, results: pd.DataFrame) -> pd.Series:
        """Re-rank the untested candidates from the experiments so far (the adaptive strategy).

        A kernel-weighted hit rate with a Beta prior: each untested gene's prior hit rate is
        its percentile in the initial ranking, worth ``prior_strength`` pseudo-experiments;
        each tested gene adds its hit (1) or miss (0) with weight ``rbf_kernel`` (similarity on
        the z-scored scores and features). The posterior mean

        ``(s * prior + sum_k w_k hit_k) / (s + sum_k w_k)``

        is defined when every result so far is a miss (or a hit), needs no model fit on a
        dozen labels, and moves away from genes that look like the misses and towards genes
        that look like the hits. It sees only the experiment outcomes, never the truth.

        Returns
        -------
        pandas.Series
            The posterior hit rate of every untested candidate, highest first.
        """
        tested = list(results.index)
        untested = [g for g in self.genes if g not in set(tested)]
        prior = self.scores[self.rank_by].rank(pct=True).loc[untested].to_numpy()
        w = rbf_kernel(self.design.loc[untested].to_numpy(), self.design.loc[tested].to_numpy(),
                       gamma=self.gamma)
        hits = results["hit"].astype(float).to_numpy()
        post = (self.prior_strength * prior + w @ hits) / (self.prior_strength + w.sum(axis=1))
        # ties (equal posteriors) are broken by the initial ranking, so the order is deterministic
        frame = pd.DataFrame({"post": post, "init": self.scores.loc[untested, self.rank_by].to_numpy()},
                             index=untested)
        return frame.sort_values(["post", "init"], ascending=False, kind="stable")["post"]

    # ---------------------------------------------------------------- the loop
    def run(self, strategy: str = "adaptive") -> pd.DataFrame:
        """Spend ``budget`` knockouts per round for ``n_rounds`` rounds with one strategy.

        ``"fixed"`` tests the initial ranking's next genes; ``"random"`` draws untested genes at
        random (seeded); ``"adaptive"`` starts as fixed, then re-ranks with :meth:`revise`
        after each round. No gene is tested twice.

        Returns
        -------
        pandas.DataFrame
            One row per round: ``strategy``, ``round`` (1-based), ``genes`` (comma-joined),
            ``n_hits`` (experiment confirmations), ``n_true`` (tested genes that are truly
            fate-changing), ``cumulative_hits``, ``cumulative_true``.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}. Fix: one of {STRATEGIES}.")
        initial = list(self.scores[self.rank_by].sort_values(ascending=False, kind="stable").index)
        rng = np.random.default_rng([self.seed, 7])
        truly = self.true_effect  # evaluated lazily, only on the genes tested
        results, rows = [], []
        for r in range(1, self.n_rounds + 1):
            done = {g for frame in results for g in frame.index}
            if strategy == "random":
                pool = [g for g in self.genes if g not in done]
                pick = [pool[i] for i in rng.choice(len(pool), size=self.budget, replace=False)]
            elif strategy == "fixed" or not results:
                pick = [g for g in initial if g not in done][: self.budget]
            else:
                pick = list(self.revise(pd.concat(results)).index[: self.budget])
            res = self.experiment(pick)
            results.append(res)
            n_true = int((truly(pick) < -self.effect).sum())
            rows.append({"strategy": strategy, "round": r, "genes": ",".join(pick),
                         "n_hits": int(res["hit"].sum()), "n_true": n_true})
        out = pd.DataFrame(rows)
        out["cumulative_hits"] = out["n_hits"].cumsum()
        out["cumulative_true"] = out["n_true"].cumsum()
        return out

    def compare(self, strategies: Sequence[str] = STRATEGIES) -> pd.DataFrame:
        """Run several strategies on the same knockouts (one per gene, cached); a long table.

        Returns
        -------
        pandas.DataFrame
            The rows of :meth:`run` for every strategy, stacked in the given order.
        """
        strategies = [strategies] if isinstance(strategies, str) else list(strategies)
        bad = [s for s in strategies if s not in STRATEGIES]
        if bad or not strategies:
            raise ValueError(f"unknown or no strategies {bad}. Fix: a subset of {STRATEGIES}.")
        return pd.concat([self.run(s) for s in strategies], ignore_index=True)
