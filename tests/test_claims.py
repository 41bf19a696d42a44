"""What the pages say about the data, checked against the embedded tables in data/results.

Two kinds of sentence appear on the pages:

* findings computed from the tables while the page renders (``app.claims_views``,
  ``app.claims_facts_views``): here each is run on the embedded tables and its words are checked
  against an independent reading of the same numbers (which block is worst, which sign, which
  model departs from the paper);
* fixed sentences that state a property of the data (mostly "by construction"): each has a test
  that queries the tables, so results that contradict a page fail here.

Sentences the data contradicted (issue 10) must not come back: ``test_contradicted_texts_are_gone``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from app import claims_facts_views as F
from app import claims_views as C
from app.data import SAFE_DUCKDB

ROOT = Path(__file__).resolve().parent.parent
DB = ROOT / "data" / "results" / "stagescope.duckdb"

pytestmark = pytest.mark.skipif(not DB.exists(), reason="embedded results not built")


@pytest.fixture(scope="module")
def con():
    # the app's configuration: DuckDB refuses a second connection to one file with another one
    c = duckdb.connect(str(DB), read_only=True, config=SAFE_DUCKDB)
    yield c
    c.close()


def agg(con, method: str, metric: str, variant: str | None = None, extra: str = "") -> pd.DataFrame:
    """metrics_agg rows of one curve, every model, ordered by layer."""
    sql = "SELECT * FROM metrics_agg WHERE method = ? AND metric = ?"
    params = [method, metric]
    if variant is not None:
        sql += " AND variant = ?"
        params.append(variant)
    return con.execute(f"{sql} {extra} ORDER BY model, layer", params).df()


def models_of(df: pd.DataFrame) -> list[str]:
    return sorted(df["model"].unique())


def one(df: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's rows: a finding run on them speaks of that model only."""
    return df[df["model"] == model]


# ------------------------------------------------------------------------------ logit lens (10)


def test_lens_kl_is_zero_and_top1_agrees_at_the_last_state(con):
    """Page 10: "KL is 0 at the last layer" and "1 at the last layer by construction"."""
    for metric, want in (("kl_to_final", 0.0), ("top1_matches_final", 1.0)):
        df = agg(con, "logit_lens", metric, "recompute_ln", "AND dataset = 'wikitext'")
        assert not df.empty
        last = df.loc[df.groupby("model")["layer"].idxmax()]
        assert np.allclose(last["mean"], want, atol=1e-4), (metric, last[["model", "mean"]])


def test_lens_findings_follow_the_curves(con):
    """Page 10: the KL rise and the entropy rise at the end are named only when they happen."""
    kl = agg(con, "logit_lens", "kl_to_final", "recompute_ln", "AND dataset = 'wikitext'")
    for model, g in C.per_model(kl):
        v = g["mean"].to_numpy()[:-1]
        i, j, rise = C.largest_rise(v)
        assert rise == pytest.approx(max(v[b] - v[:b].min() for b in range(1, len(v))))
        text = C.lens_finding("kl_to_final", one(kl, model))
        assert ("*rises*" in text) == (rise > 0.1 * v[i]), model
    ent = agg(con, "logit_lens", "entropy", "recompute_ln", "AND dataset = 'wikitext'")
    for model, g in C.per_model(ent):
        v = g["mean"].to_numpy()
        widens = v[-1] > 1.1 * v[1:].min()
        assert ("do not sharpen" in C.lens_finding("entropy", one(ent, model))) == widens, model


# ------------------------------------------------------------------------------ early layers (20)


def test_locality_finding_names_the_departing_models(con):
    df = agg(con, "attention_locality", "prev5_mass_fraction")
    for model, g in C.per_model(df):
        text = C.locality_finding(one(df, model))
        d, v = g["rel_depth"].to_numpy(), g["mean"].to_numpy()
        first, middle = v[d < 1 / 3].mean(), v[(d >= 1 / 3) & (d < 2 / 3)].mean()
        last = v[d >= 2 / 3].mean()
        departs = max(first, middle, last) != first
        assert ("departs from the paper" in text) == departs, model
        assert f"{first:.2f} in the first third" in text


def test_attention_mlp_ratio_finding(con):
    df = agg(con, "component_norms", "attn_mlp_ratio", "ratio_of_means")
    for model, g in C.per_model(df):
        t = C.thirds(g)
        text = C.ratio_finding(one(df, model))
        assert ("departs from the paper" in text) == (t[0] <= t[2]), model


# ------------------------------------------------------------------------------ delete / swap (21)


def test_deletion_finding_names_the_worst_block_and_last_block_status(con):
    """Issue 10: Gemma's worst deletion is block 5, not block 0 -- the page computes it."""
    kl = agg(con, "layer_ablation", "kl", "block", "AND dataset = 'wikitext'")
    swap = agg(con, "layer_swap", "kl", None, "AND dataset = 'wikitext'")
    for model, g in C.per_model(kl):
        worst = int(g.loc[g["mean"].idxmax(), "layer"])
        part = C.deletion_finding(one(kl, model), one(swap, model))
        assert f"worst deletion is block {worst} " in part, (model, part)
        v = g["mean"].to_numpy()
        critical = v[-1] > 2 * np.median(v[1:-1])
        assert ("no more critical" in part) == (not critical), model
        sw = swap[swap["model"] == model].set_index("layer")["mean"]
        mids = [b for b in sw.index if 0 < b < len(v) - 1]
        gentler = sum(sw[b] < g.set_index("layer")["mean"][b] for b in mids)
        assert f"gentler than the deletion at {gentler} of {len(mids)} blocks" in part


def test_deleting_the_last_block_entropy_sign(con):
    """Issue 10: deleting the last block *lowers* the entropy in both models: the page says so."""
    df = agg(con, "layer_ablation", "delta_entropy", "block", "AND dataset = 'wikitext'")
    for model, g in C.per_model(df):
        last = float(g["mean"].iloc[-1])
        text = C.edge_finding("delta_entropy", one(df, model))
        assert ("*more* confident" in text) == (last < 0), model
        assert f"{last:+.2f} bits" in text


# ------------------------------------------------------------------------------ sharpening (22)


def test_neuron_finding_says_who_dominates_the_last_block(con):
    """Issue 10: in Gemma's last block prediction neurons outnumber suppression ones."""
    pred = agg(con, "neurons", "pct_prediction")
    supp = agg(con, "neurons", "pct_suppression")
    for model in models_of(pred):
        p = one(pred, model).sort_values("layer")["mean"].iloc[-1]
        q = one(supp, model).sort_values("layer")["mean"].iloc[-1]
        text = C.neuron_finding(one(pred, model), one(supp, model))
        assert ("departs from the paper" in text) == (p >= q), model


def test_entropy_instruments_agree_at_the_end_and_cached_inflates_early(con):
    """Page 22: the two norm variants agree at the last state; the cached scale inflates early
    entropy (the lesson's sentence)."""
    df = con.execute(
        "SELECT * FROM metrics_agg WHERE method = 'lens_entropy' ORDER BY model, layer"
    ).df()
    assert not df.empty
    for model, g in df.groupby("model"):
        w = g.pivot_table(index="layer", columns="variant", values="mean").sort_index()
        assert w["cached_final_scale"].iloc[-1] == pytest.approx(w["recompute_ln"].iloc[-1])
        early = w.iloc[1 : len(w) // 2]
        assert (early["cached_final_scale"] > early["recompute_ln"]).all(), model
    assert "agree at the last state" in C.entropy_instruments_finding(df)


# ------------------------------------------------------------------------------ facts (30, 31)


def test_sites_finding_orders_mlp_and_attention_sites(con):
    mlp = agg(con, "causal_tracing", "indirect_effect", "mlp", "AND grp = 'last_subject'")
    attn = agg(con, "causal_tracing", "indirect_effect", "attn", "AND grp = 'last'")
    for model in models_of(mlp):
        m, a = one(mlp, model), one(attn, model)
        in_order = m.loc[m["mean"].idxmax(), "rel_depth"] < a.loc[a["mean"].idxmax(), "rel_depth"]
        assert ("departs from the paper" in F.sites_finding(m, a)) == (not in_order), model


def test_knockout_finding_and_window_share(con):
    df = con.execute(
        """SELECT model, grp, layer, n_layers, rel_depth, avg(value) AS mean FROM metrics
           WHERE method = 'attention_knockout' AND metric = 'relative_diff_pct'
           AND layer_kind = 'window_center' GROUP BY ALL ORDER BY model, grp, layer"""
    ).df()
    for model in models_of(df):
        sub = df[(df["model"] == model) & (df["grp"] == "subject")]
        hurt = sub[sub["mean"] <= 0.5 * sub["mean"].min()]["rel_depth"]
        text = F.knockout_finding(one(df, model), (0.4, 0.7))
        assert f"{sub['mean'].min():.0f} %" in text
        assert f"between depths {hurt.min():.2f} and {hurt.max():.2f}" in text
        assert ("outside" in text) == (hurt.min() > 0.7 or hurt.max() < 0.4)
    note = F.window_note("W9", df)
    for model, n in df.groupby("model")["n_layers"].max().items():
        assert f"{9 / n:.0%} of {model}'s {n} blocks" in note


# ------------------------------------------------------------------------------ probes (41)


def test_probe_template_finding_and_control_near_chance(con):
    """Page 41: 'only accuracy above the template-only line is knowledge'; the shuffled-label
    control is near chance (not a memorisation control)."""
    df = con.execute(
        "SELECT * FROM metrics_agg WHERE method = 'probes' AND grp = '' AND unit = 'fraction'"
    ).df()
    for model, g in df.groupby("model"):
        text = F.template_finding(g[g["metric"].isin(["probe_acc", "template_acc"])])
        p = g[g["metric"] == "probe_acc"].sort_values("layer")["mean"].to_numpy()
        t = g[g["metric"] == "template_acc"].sort_values("layer")["mean"].to_numpy()
        assert ("never beats it" in text) == (not (p > t + 0.05).any()), model
        control = g[g["metric"] == "control_acc"]["mean"].mean()
        majority = g[g["metric"] == "majority_acc"]["mean"].mean()
        assert control <= majority + 0.1, (model, control, majority)


# ------------------------------------------------------------------------------ lenses (50, 51)


def test_refine_rate_and_tuned_kl_are_zero_at_the_output(con):
    """Pages 50, 51: flip rate 0 and both lenses' KL 0 at the last state, by construction."""
    for method, metric in (("guess_refine", "flip_rate"), ("tuned_lens", "kl_to_final")):
        df = con.execute(
            "SELECT model, variant, grp, layer, mean FROM metrics_agg WHERE method = ? "
            "AND metric = ? AND dataset = 'wikitext'",
            [method, metric],
        ).df()
        assert not df.empty
        last = df[df["layer"] == df.groupby("model")["layer"].transform("max")]
        assert np.allclose(last["mean"], 0.0, atol=1e-3), (method, last)


def test_worse_states_finding_lists_where_the_tuned_lens_loses(con):
    df = agg(con, "tuned_lens", "kl_to_final")
    for model, g in df.groupby("model"):
        w = g.pivot_table(index="layer", columns="variant", values="mean")
        worse = w.index[w["tuned"] > w["logit"] + 1e-9].tolist()
        part = F.worse_states_finding(g)
        assert (str(worse) in part) if worse else ("every state" in part)


def test_mcq_finding_says_when_a_model_is_at_chance(con):
    df = con.execute(
        "SELECT model, variant, mean, n FROM metrics_agg WHERE method = 'guess_refine' "
        "AND dataset = 'mcq' AND metric = 'model_correct'"
    ).df()
    if df.empty:
        pytest.skip("no multiple-choice rows")
    settled = df.assign(what="model's final answer correct (share)", lens=df["variant"])
    for r in df.drop_duplicates("model").itertuples():
        at_chance = r.mean <= 0.25 + 1.96 * (0.25 * 0.75 / r.n) ** 0.5
        text = F.mcq_finding(one(settled, r.model))
        assert ("within chance" in text) == at_chance, r.model


def test_disagreement_finding_does_not_call_the_output_a_finding():
    """Issue 11: 'from layer 30 on they agree' was true only because 30 is the output."""
    share = [0.1, 0.2, 0.6, 0.9, 0.5, 0.3, 0.2, 0.0]  # disagree up to state 6 of 7
    by_layer = pd.DataFrame(
        {"layer": range(8), "rel_depth": np.arange(8) / 7, "share_disagree": share}
    )
    text = F.disagreement_finding(by_layer)
    assert "peaks at state 3" in text and "from state 2 to 4" in text
    assert "agree only at the output" in text and "From state" not in text
    by_layer.loc[5:, "share_disagree"] = 0.0
    assert "From state 5 of 7 on they agree" in F.disagreement_finding(by_layer)
    by_layer["share_disagree"] = 0.0
    assert "agree at every state" in F.disagreement_finding(by_layer)


# ------------------------------------------------------------------------------ every page


CONTRADICTED = [
    # issue 10, "Texts contradicted by the data"
    "Removing a late block tends to raise the entropy",
    "Locality is highest in the first blocks and falls with depth",
    "KL falls with depth and reaches 0",
    "the last layers sharpen the prediction",
    "where the swap is gentler, neighbouring",
    "In Gemma-3 the largest spike is block 5",
    # issue 11, page 51
    "From layer {int(agree_from) + 1} on they agree",
    "Disagreement is concentrated in the early layers",
    # issue 10/11: unnamed seed documents
    "seed 000",
    "seed 001",
    "Seed 000",
    "Seed 001",
]


def test_contradicted_texts_are_gone():
    files = sorted((ROOT / "pages").glob("[0-9][0-9]_*.py")) + sorted((ROOT / "app").glob("*.py"))
    files = [f for f in files if "glossary" not in f.name]  # the glossary explains the seeds
    for f in files:
        text = f.read_text()
        for phrase in CONTRADICTED:
            assert phrase not in text, f"{f.name} still says {phrase!r}"


def test_sample_size_caption_reads_the_n_column():
    df = pd.DataFrame(
        {"model": ["a", "a", "b"], "layer": [0, 1, 0], "n": [16, 16, 30], "mean": [1.0, 2, 3]}
    )
    assert C.sample_size(df, "documents") == "n per point (documents): 16 (a), 30 (b)."
    assert C.sample_size(df.iloc[:0], "documents") == ""


N_PAGES = [
    "10_logit_lens.py",
    "20_early_layers.py",
    "21_delete_swap.py",
    "22_sharpening.py",
    "23_stage_map.py",
    "30_facts_stored.py",
    "31_facts_moved.py",
    "41_know_vs_use.py",
    "43_quality.py",
    "50_guess_refine.py",
    "51_lens_disagreement.py",
]


@pytest.mark.parametrize("page", N_PAGES)
def test_precomputed_charts_state_their_n(page, monkeypatch):
    """Every precomputed depth chart says how many documents, facts or prompts stand behind it."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("STAGESCOPE_RESULTS_DIR", raising=False)
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption]
    assert any(c.startswith("n per point") for c in captions), captions
    assert any("What these results show" in m.value for m in at.markdown), page
