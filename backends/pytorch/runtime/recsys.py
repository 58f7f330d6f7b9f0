"""Recommendation: the two-tower model's recommend() (the top-k items of the whole catalogue for each user).

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

import torch


@torch.no_grad()
def recommend(self, user, k=10):
    """The k items of the highest score u . v for each user, over the whole catalogue: (B, k) item ids."""
    items = torch.arange(self.config.num_items, device=user.device)
    u, v = self(user, items)  # the towers are independent: B users, all items
    return (u @ v.t()).topk(min(k, len(items)), dim=-1).indices
