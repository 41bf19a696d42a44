"""One start-token rule for every model: BOS (else EOS) once at position 0, in the provenance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from precompute.model.load import start_token

TEXT = "The Eiffel Tower is located in the city of Paris."


class _Tok:
    """A stand-in tokenizer: ``bos`` added by default or not, ``vocab`` of special tokens."""

    def __init__(self, bos=None, eos=None, add_bos=False, vocab=()):
        self.bos_token_id, self.eos_token_id = bos, eos
        self.bos_token, self.eos_token = f"<bos{bos}>", f"<eos{eos}>"
        self.add_bos, self.vocab, self.unk_token_id = add_bos, dict(vocab), 99

    def __call__(self, text, add_special_tokens=True):
        ids = [50]
        return SimpleNamespace(
            input_ids=[self.bos_token_id, *ids] if self.add_bos and add_special_tokens else ids
        )

    def convert_tokens_to_ids(self, token):
        return self.vocab.get(token, self.unk_token_id)

    def convert_ids_to_tokens(self, tid):
        return {v: k for k, v in self.vocab.items()}.get(tid, "<unk>")


def test_rule_default_bos_then_endoftext_then_bos_then_eos():
    eot = {"<|endoftext|>": 0}
    assert start_token(_Tok(bos=2, eos=1, add_bos=True, vocab=eot)) == (2, "<bos2>", "default_bos")
    # SmolLM2-Instruct: a declared BOS (<|im_start|>) the tokenizer never adds; <|endoftext|> wins
    assert start_token(_Tok(bos=1, eos=2, vocab=eot)) == (0, "<|endoftext|>", "endoftext")
    assert start_token(_Tok(bos=1, eos=2)) == (1, "<bos1>", "bos")
    assert start_token(_Tok(eos=7)) == (7, "<eos7>", "eos")
    with pytest.raises(ValueError, match="neither"):
        start_token(_Tok())


def test_every_model_starts_with_its_start_token_exactly_once(tiny):
    sid, text, kind = start_token(tiny.tokenizer)
    assert tiny.start_id == sid
    ids = tiny.tokenize(TEXT)[0]
    body = tiny.tokenizer(TEXT, add_special_tokens=False).input_ids
    assert ids[0] == sid and int((ids == sid).sum()) == 1
    assert ids[1:].tolist() == body  # the text's own tokens follow, nothing else added
    assert tiny.tokenize(TEXT, max_tokens=3)[0].tolist() == [sid, *body[:2]]
    assert tiny.provenance["start_token"] == {"id": sid, "text": text, "rule": kind}


def test_fact_spans_count_the_start_token(tiny):
    from precompute.facts import subject_tokens

    fact = subject_tokens(tiny, "Eiffel Tower is located in the city of", "Eiffel Tower")
    assert fact.ids[0, 0] == tiny.start_id and fact.start == 1  # the subject opens the text
    assert tiny.tokenizer.decode(fact.ids[0, fact.start : fact.end]).strip() == "Eiffel Tower"


def test_position_zero_exclusion_drops_exactly_the_start_token(tiny):
    """Pooled means (E1-E4) and component norms leave out position 0: the start token only."""
    from precompute.methods.component_norms import layer_summary, token_norms
    from precompute.model.pooled import pooled_states

    seen = {}

    def keep(j, states, ids):
        seen["states"], seen["ids"] = states, ids

    ps = pooled_states(tiny, [TEXT], on_states=keep)
    ids, states = seen["ids"], seen["states"]  # (T,), (L+1, T, D)
    not_start = ids != tiny.start_id
    assert not not_start[0] and not_start[1:].all()  # dropped: exactly the start token
    expect = states[:, not_start].mean(1)  # (L+1, D)
    assert torch.allclose(torch.from_numpy(ps.mean[:, 0]), expect.float(), atol=1e-6)
    body = tiny.tokenizer(TEXT, add_special_tokens=False).input_ids
    assert int(ps.n_tokens[0]) == len(body) + 1
    norms = token_norms(tiny, ids[None])  # (L, T) per kind
    summary = layer_summary(norms)
    assert torch.allclose(summary["attn_out_norm"], norms["attn"][:, not_start].mean(-1))
