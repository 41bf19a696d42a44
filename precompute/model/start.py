"""The one start-token rule: every tokenised text opens with one start token at position 0.

Methods that exclude position 0 (lens means, pooled states, component norms, tuned-lens training,
intervention KLs) then drop the same thing for every model: the start token, which most models
use as an attention sink, never a word of the text. The start token is, in this order:

1. the BOS token the model's tokenizer adds by default (Gemma's ``<bos>``, Llama's
   ``<|begin_of_text|>``): what the model saw at the start of every training text;
2. else ``<|endoftext|>`` when the vocabulary has it (GPT-2, Pythia, Qwen, SmolLM2): the document
   separator of their pretraining, which papers prepend for GPT-2 (SmolLM2-Instruct declares
   ``<|im_start|>`` as BOS, a chat-turn marker its tokenizer never adds: prepending it lowered
   correct answers on the team's facts from 113 to 100 of 185, ``<|endoftext|>`` gave 114);
3. else the tokenizer's declared BOS, else its EOS; a tokenizer with none is refused.

Example:
    >>> from precompute.model.load import load_model
    >>> start_token(load_model("tiny-gpt2").tokenizer)
    (0, '<|endoftext|>', 'endoftext')
"""

from __future__ import annotations

from typing import Any

ENDOFTEXT = "<|endoftext|>"


def start_token(tokenizer: Any) -> tuple[int, str, str]:
    """The start token of a tokenizer: ``(id, text, rule)`` (cached on the tokenizer).

    ``rule`` says which step of the module docstring chose it: ``default_bos``, ``endoftext``,
    ``bos`` or ``eos``.

    Raises:
        ValueError: The tokenizer has neither a BOS, an EOS nor ``<|endoftext|>``.
    """
    cached = getattr(tokenizer, "_stagescope_start", None)
    if cached is not None:
        return cached
    out = _find(tokenizer)
    tokenizer._stagescope_start = out
    return out


def _find(tokenizer: Any) -> tuple[int, str, str]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        default = tokenizer("a").input_ids
        plain = tokenizer("a", add_special_tokens=False).input_ids
        if default[:1] == [bos] and plain[:1] != [bos]:
            return int(bos), str(tokenizer.bos_token), "default_bos"
    eot = _token_id(tokenizer, ENDOFTEXT)
    if eot is not None:
        return eot, ENDOFTEXT, "endoftext"
    if bos is not None:
        return int(bos), str(tokenizer.bos_token), "bos"
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        return int(eos), str(tokenizer.eos_token), "eos"
    raise ValueError(
        "The tokenizer defines neither a BOS nor an EOS token nor <|endoftext|>: no start token."
    )


def _token_id(tokenizer: Any, token: str) -> int | None:
    """The id of ``token`` when it is one token of the vocabulary (else ``None``)."""
    tid = tokenizer.convert_tokens_to_ids(token)  # unknown: the unknown token's id, or None
    if tid is None or tokenizer.convert_ids_to_tokens(int(tid)) != token:
        return None
    return int(tid)
