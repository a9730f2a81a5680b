"""PPO's policy: an autoregressive LSTM over token positions, its masked softmax, and what a draw keeps.

The controller reads the token sequence left to right and emits one masked softmax per position, so
the masks of any :class:`~search_spaces.tokens.TokenSpace` are respected exactly. A :class:`Drawn`
sequence keeps the masks and log-probabilities it was drawn under, which PPO's importance ratio needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["Controller", "masked_log_softmax", "Drawn", "stack_samples"]


class Controller(nn.Module):
    """A tiny LSTM policy: previous token in, logits over the next position's choices out."""

    def __init__(self, sizes: tuple[int, ...], hidden: int = 64, embed: int = 32, recurrent: bool = True):
        super().__init__()
        self.sizes = tuple(sizes)
        self.recurrent = recurrent
        self.width = max(sizes)
        offsets = np.concatenate([[1], 1 + np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.as_tensor(offsets), persistent=False)
        self.embedding = nn.Embedding(1 + int(sum(sizes)), embed)
        self.cell = nn.LSTMCell(embed, hidden)
        self.heads = nn.Parameter(torch.zeros(len(sizes), hidden, self.width))
        self.bias = nn.Parameter(torch.zeros(len(sizes), self.width))
        nn.init.normal_(self.heads, std=0.1 / math.sqrt(hidden))

    def step(self, position: int, prev: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        """Logits for ``position`` given the previous tokens (``prev``, shape [B]; ignored at 0).

        Not ``recurrent``: one learnt logit vector per position, whatever came before (a factorised
        policy, as TPE's independent per-dimension densities are); the LSTM is not run.
        """
        if not self.recurrent:
            return self.bias[position].expand(prev.shape[0], -1), state
        if position == 0:
            index = torch.zeros_like(prev)
        else:
            index = prev + self.offsets[position - 1]
        h, c = self.cell(self.embedding(index), state)
        return h @ self.heads[position] + self.bias[position], (h, c)

    def evaluate(self, tokens: torch.Tensor, masks: torch.Tensor, temperature: float, logit_clip: float | None):
        """Per-position log-probabilities of ``tokens`` [B, K] and entropies, under ``masks`` [B, K, W]."""
        state = None
        prev = torch.zeros(tokens.shape[0], dtype=torch.long)
        logps, entropies = [], []
        for position in range(tokens.shape[1]):
            logits, state = self.step(position, prev, state)
            log_probs = masked_log_softmax(logits, masks[:, position], temperature, logit_clip)
            logps.append(log_probs.gather(1, tokens[:, position : position + 1]).squeeze(1))
            probs = log_probs.exp()
            entropies.append(-(probs * torch.where(masks[:, position], log_probs, 0.0)).sum(1))
            prev = tokens[:, position]
        return torch.stack(logps, 1), torch.stack(entropies, 1)


def masked_log_softmax(logits, mask, temperature: float, logit_clip: float | None):
    """Log-softmax over the allowed choices only (disallowed get probability zero)."""
    logits = logits / temperature
    if logit_clip is not None:
        logits = logit_clip * torch.tanh(logits / logit_clip)
    return torch.log_softmax(logits.masked_fill(~mask, -1e9), dim=-1)


@dataclass
class Drawn:
    """What PPO must remember about a proposal until its reward arrives."""

    tokens: np.ndarray  # [K] int64
    masks: np.ndarray  # [K, W] bool
    logp: np.ndarray  # [K] float32, log-probabilities under the policy that drew it


def stack_samples(samples: list[tuple[Drawn, float]]):
    """Tensors of (drawn, advantage) pairs: tokens [B, K], masks [B, K, W], old log-probs [B, K], adv [B]."""
    tokens = torch.from_numpy(np.stack([d.tokens for d, _ in samples]))
    masks = torch.from_numpy(np.stack([d.masks for d, _ in samples]))
    old_logp = torch.from_numpy(np.stack([d.logp for d, _ in samples]))
    adv = torch.tensor([a for _, a in samples], dtype=torch.float32)
    return tokens, masks, old_logp, adv
