"""The one block replay (one home for running a model block by block).

Find the block list, run the model once keeping each block's input, and run blocks from any
index on a batch of states.

Every hook registration, forward pass and hook removal in here happens while holding
``lm.lock`` (hooks are state on a model shared by all sessions).
"""

from __future__ import annotations

from typing import Any

import torch

from precompute.model.load import LoadedModel

#: Where each architecture family keeps its block list on the Hugging Face model.
BLOCK_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.language_model.layers")


def block_stack(lm: LoadedModel) -> torch.nn.ModuleList:
    """Return the model's list of blocks, in execution order.

    This is the list the model's own forward iterates (``original_model.model.layers`` for
    Llama / Gemma, ``.transformer.h`` for GPT-2, ``.gpt_neox.layers`` for GPT-NeoX); its entries
    are the bridge's wrapped blocks, so bridge hooks still fire.

    Raises:
        ValueError: The architecture keeps its blocks somewhere this code does not know.
    """
    model = lm.bridge.original_model
    for path in BLOCK_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj) == lm.n_layers:
            return obj
    raise ValueError(
        f"Cannot find the block list of {lm.name} ({type(model).__name__}); the block replay "
        f"supports models whose blocks live at one of {BLOCK_PATHS}."
    )
