import pytest
import torch
from scipy import stats as sps

from precompute.methods.neurons import (
    NeuronsConfig,
    classify,
    norm_scale,
    output_weights,
    process,
    unembedding_directions,
    vocab_moments,
)
from precompute.types import RunContext


def random_unembedding(d=64, v=5000, seed=0):
    g = torch.Generator().manual_seed(seed)
    w_u = torch.randn(d, v, generator=g)
    return w_u / w_u.norm(dim=0, keepdim=True), g


def test_single_unembedding_direction_is_a_prediction_neuron():
    # the one matching token has z ~ sqrt(D), so kurtosis ~ 3 + D^2 / V: take D^2 >> V
    w_u, g = random_unembedding(d=512, v=2000)
    w_out = torch.stack([w_u[:, 17] * 3.0, -w_u[:, 17], torch.randn(512, generator=g)])
    m = vocab_moments(w_out, w_u)
    c = classify(m)
    assert m["vocab_kurt"][0] > 50 and m["vocab_skew"][0] > 1  # huge kurtosis, positive skew
    assert m["vocab_kurt"][1] > 50 and m["vocab_skew"][1] < -1  # its negative: negative skew
    assert c["is_prediction"].tolist() == [True, False, False]
    assert c["is_suppression"].tolist() == [False, True, False]


def test_random_gaussian_neurons_are_near_gaussian():
    w_u, g = random_unembedding(d=128, v=20000, seed=1)
    m = vocab_moments(torch.randn(50, 128, generator=g), w_u)
    assert abs(float(m["vocab_kurt"].mean()) - 3.0) < 0.15
    assert abs(float(m["vocab_skew"].mean())) < 0.05
    assert not classify(m)["is_prediction"].any()


def test_moments_match_scipy_non_excess_and_chunking():
    w_u, g = random_unembedding(d=32, v=3000, seed=2)
    w_out = torch.randn(7, 32, generator=g)
    w_out[3] = w_u[:, 5] + 0.1 * w_out[3]
    a = vocab_moments(w_out, w_u, chunk_elems=3000)  # one neuron per chunk
    b = vocab_moments(w_out, w_u)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    c = (w_out / w_out.norm(dim=1, keepdim=True) @ w_u).double().numpy()
    torch.testing.assert_close(
        a["vocab_kurt"].double(),
        torch.tensor(sps.kurtosis(c, axis=1, fisher=False)),
        rtol=1e-3,
        atol=1e-3,
    )
    torch.testing.assert_close(
        a["vocab_skew"].double(), torch.tensor(sps.skew(c, axis=1)), rtol=1e-3, atol=1e-3
    )
    torch.testing.assert_close(
        a["vocab_var"].double(), torch.tensor(c.var(axis=1)), rtol=1e-3, atol=1e-7
    )


def test_dead_neuron_gives_zeros_not_nan():
    w_u, _ = random_unembedding(d=16, v=100)
    m = vocab_moments(torch.zeros(2, 16), w_u)
    assert all(torch.isfinite(t).all() for t in m.values())
    assert not classify(m)["is_prediction"].any()


def test_norm_scale_reads_layernorm_and_rmsnorm(tiny_models):
    ln = tiny_models["tiny-gpt2"].bridge.ln_final.original_component
    torch.testing.assert_close(norm_scale(ln, 64), ln.weight.detach())
    rms = tiny_models["tiny-llama"].bridge.ln_final.original_component
    with torch.no_grad():
        rms.weight.mul_(2.0)
    try:
        torch.testing.assert_close(norm_scale(rms, 64), rms.weight.detach(), atol=1e-4, rtol=1e-4)
    finally:
        with torch.no_grad():
            rms.weight.div_(2.0)


def test_preprocessing_is_the_transformerlens_folding(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    w_u = unembedding_directions(lm)
    assert torch.allclose(w_u.norm(dim=0), torch.ones(()), atol=1e-5)
    raw = lm.bridge.original_model.lm_head.weight.detach().T  # (D, V)
    ln = lm.bridge.ln_final.original_component
    want = raw * ln.weight.detach()[:, None]
    want = want - want.mean(0, keepdim=True)
    want = want - want.mean(1, keepdim=True)
    torch.testing.assert_close(w_u, want / want.norm(dim=0, keepdim=True), atol=1e-5, rtol=1e-4)
    w = output_weights(lm, 1)
    assert w.shape == (lm.bridge.cfg.d_mlp, lm.d_model)
    assert torch.allclose(w.mean(1), torch.zeros(()), atol=1e-6)  # centred writing weights
    raw_w = output_weights(lm, 1, "raw")
    torch.testing.assert_close(w, raw_w - raw_w.mean(1, keepdim=True))


def test_process_tables(tiny):
    ctx = RunContext(tiny.name, "neurons", "examples", "r1")
    out = process(tiny, [], NeuronsConfig(), ctx)
    neurons, metrics = out["neurons"], out["metrics"]
    d_mlp = tiny.bridge.cfg.d_mlp
    assert len(neurons) == tiny.n_layers * d_mlp
    assert neurons[["vocab_mean", "vocab_var", "vocab_skew", "vocab_kurt"]].notna().all().all()
    assert len(metrics) == 4 * tiny.n_layers
    pct = metrics[metrics["metric"] == "pct_prediction"].set_index("layer")["value"]
    counts = neurons.groupby("layer")["is_prediction"].sum()
    assert (pct == 100 * counts / d_mlp).all()
    assert set(metrics["dataset"]) == {"weights"}


def test_bad_inputs(tiny_models):
    lm = tiny_models["tiny-neox"]
    with pytest.raises(ValueError, match="out of range"):
        output_weights(lm, lm.n_layers)
    with pytest.raises(ValueError, match="preprocessing"):
        unembedding_directions(lm, "fold_everything")
