"""SASRec (Kang & McAuley 2018) in PyTorch: the reference RecServe's native SASRec is checked against.

Semantics follow the authors' TF code, parameter names the widely used pmixer/SASRec.pytorch, so
state_dict keys are what Scripts/export_sasrec.py expects. One deliberate difference from pmixer:
the attention mask is causal AND hides padding keys from every real query (padding queries
attend to themselves only, so no softmax row is empty). With sequences right-aligned in the
window, real positions then give exactly what the same sequence gives without any padding.

Items are 1-based indices (embedding row 0 is padding); a sequence is a list/array of them,
oldest first. Importable; torch and numpy only (plus Scripts/export_sasrec.py for reading files).
"""

import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Scripts"))
import export_sasrec  # noqa: E402

LAYER_NORM_EPS = 1e-8
DEFAULTS = dict(maxlen=200, dim=50, blocks=2, heads=1, dropout=0.2, lr=1e-3, batch=128, epochs=200)


class PointWiseFeedForward(nn.Module):
    """conv2(relu(conv1(f))) with dropout after each conv, plus the residual f. The convolutions
    are Conv1d(d, d, kernel 1) as in pmixer (state_dict keys conv1/conv2), applied as the
    equivalent linear maps over the last dimension."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, kernel_size=1)
        self.dropout1 = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=1)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, f):
        y = F.linear(f, self.conv1.weight.squeeze(-1), self.conv1.bias)
        y = F.linear(torch.relu(self.dropout1(y)), self.conv2.weight.squeeze(-1), self.conv2.bias)
        return f + self.dropout2(y)


class SASRec(nn.Module):
    def __init__(self, item_count: int, maxlen=200, dim=50, blocks=2, heads=1, dropout=0.2):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        self.item_count, self.maxlen, self.dim, self.heads = item_count, maxlen, dim, heads
        self.item_emb = nn.Embedding(item_count + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, dim)
        self.emb_dropout = nn.Dropout(dropout)
        self.attention_layernorms = nn.ModuleList()
        self.attention_layers = nn.ModuleList()
        self.forward_layernorms = nn.ModuleList()
        self.forward_layers = nn.ModuleList()
        for _ in range(blocks):
            self.attention_layernorms.append(nn.LayerNorm(dim, eps=LAYER_NORM_EPS))
            self.attention_layers.append(nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True))
            self.forward_layernorms.append(nn.LayerNorm(dim, eps=LAYER_NORM_EPS))
            self.forward_layers.append(PointWiseFeedForward(dim, dropout))
        self.last_layernorm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def attention_mask(self, windows):
        """Additive float mask [B*heads, L, L]: query i sees key j iff j <= i and j is a real item,
        except that a padding query sees itself (its output is zeroed anyway)."""
        length = windows.shape[1]
        real = windows != 0
        causal = torch.ones(length, length, dtype=torch.bool, device=windows.device).tril()
        diagonal = torch.eye(length, dtype=torch.bool, device=windows.device)
        allowed = causal & (real[:, None, :] | diagonal)
        mask = torch.zeros(allowed.shape, device=windows.device).masked_fill(~allowed, float("-inf"))
        return mask.repeat_interleave(self.heads, dim=0)

    def hidden(self, windows):
        """windows: LongTensor [B, L] (L <= maxlen), right-aligned: its columns are window slots
        maxlen-L .. maxlen-1. Returns the last layer norm's output [B, L, d]."""
        length = windows.shape[1]
        x = self.item_emb(windows) * math.sqrt(self.dim) + self.pos_emb.weight[self.maxlen - length:]
        x = self.emb_dropout(x)
        keep = (windows != 0).unsqueeze(-1).to(x.dtype)
        x = x * keep
        mask = self.attention_mask(windows)
        for norm_a, attention, norm_f, ffn in zip(self.attention_layernorms, self.attention_layers,
                                                  self.forward_layernorms, self.forward_layers):
            q = norm_a(x)
            a, _ = attention(q, x, x, attn_mask=mask, need_weights=False)
            x = q + a
            x = ffn(norm_f(x))
            x = x * keep
        return self.last_layernorm(x)


def init_like_pmixer(model: SASRec) -> None:
    """xavier_normal_ on every parameter with >= 2 dims; 1-D parameters keep PyTorch's defaults
    (LayerNorm 1/0, attention biases 0, Conv1d biases U(-1/sqrt(d), 1/sqrt(d))). The padding row
    of item_emb is zeroed (it is never used: padding slots are multiplied by 0)."""
    for param in model.parameters():
        if param.dim() >= 2:
            nn.init.xavier_normal_(param.data)
    with torch.no_grad():
        model.item_emb.weight[0].zero_()


# ---------------------------------------------------------------------------------------------
# sequences and batches


def window(sequence, maxlen: int) -> np.ndarray:
    """The last maxlen items, right-aligned in a zero-padded window of maxlen slots."""
    out = np.zeros(maxlen, dtype=np.int64)
    tail = np.asarray(sequence, dtype=np.int64)[-maxlen:]
    if len(tail):
        out[maxlen - len(tail):] = tail
    return out


def windows(sequences, maxlen: int) -> np.ndarray:
    return np.stack([window(s, maxlen) for s in sequences]) if len(sequences) else np.zeros((0, maxlen), np.int64)


def load_sequences(path):
    """(user ids, item ids, sequences) from an interaction file: users in order of first
    appearance, items in order of first appearance in the file (item i is index i+1), each
    sequence stably sorted by timestamp (ties keep file order), as 1-based int64 arrays."""
    rows = export_sasrec.read_interactions(path)
    by_user = export_sasrec.user_sequences_from_rows(rows)
    item_ids = list(dict.fromkeys(item for _, item, _ in rows))
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    users = list(by_user)
    return users, item_ids, [np.array([index[x] for x in by_user[u]], dtype=np.int64) for u in users]


class TrainingData:
    """Inputs s_1..s_{n-1} and targets s_2..s_n of every user with n >= 2, right-aligned in
    maxlen-slot windows, and each user's item set for negative sampling."""

    def __init__(self, sequences, item_count: int, maxlen: int):
        usable = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) >= 2]
        self.item_count = item_count
        self.inputs = windows([s[:-1] for s in usable], maxlen)
        self.targets = windows([s[1:] for s in usable], maxlen)
        self.seen = [np.unique(s) for s in usable]

    def __len__(self):
        return len(self.seen)

    def negatives(self, users, rng) -> np.ndarray:
        """One item per target slot, uniform over the items the user never interacted with
        (rejection sampling); 0 at padding slots."""
        targets = self.targets[users]
        out = np.zeros_like(targets)
        for row, u in enumerate(users):
            slots = np.flatnonzero(targets[row])
            seen = self.seen[u]
            draw = rng.integers(1, self.item_count + 1, size=len(slots))
            while True:
                at = np.minimum(np.searchsorted(seen, draw), len(seen) - 1)
                bad = seen[at] == draw
                if not bad.any():
                    break
                draw[bad] = rng.integers(1, self.item_count + 1, size=int(bad.sum()))
            out[row, slots] = draw
        return out


def train(sequences, item_count: int, *, maxlen=200, dim=50, blocks=2, heads=1, dropout=0.2, lr=1e-3,
          batch=128, epochs=200, seed=42, threads=2, log=None):
    """Trains SASRec on 1-based item sequences (oldest first). Each epoch visits every user with
    at least 2 items once, in a random order, `batch` users at a time. Returns (model in eval
    mode, fit seconds: data preparation, initialisation and all epochs)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    data = TrainingData(sequences, item_count, maxlen)
    model = SASRec(item_count, maxlen=maxlen, dim=dim, blocks=blocks, heads=heads, dropout=dropout)
    init_like_pmixer(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    model.train()
    for epoch in range(epochs):
        total, positions = 0.0, 0
        order = rng.permutation(len(data))
        for begin in range(0, len(order), batch):
            users = order[begin:begin + batch]
            targets = data.targets[users]
            # Right alignment: columns left of every sequence in the batch are pure padding and
            # change nothing for the real positions, so they are dropped.
            first = int(np.argmax(targets.any(axis=0)))
            inputs = torch.from_numpy(data.inputs[users][:, first:])
            pos = torch.from_numpy(targets[:, first:])
            neg = torch.from_numpy(data.negatives(users, rng)[:, first:])
            h = model.hidden(inputs)
            pos_logits = (h * model.item_emb(pos)).sum(-1)
            neg_logits = (h * model.item_emb(neg)).sum(-1)
            real = pos != 0
            loss = (F.binary_cross_entropy_with_logits(pos_logits[real], torch.ones_like(pos_logits[real]))
                    + F.binary_cross_entropy_with_logits(neg_logits[real], torch.zeros_like(neg_logits[real])))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            n = int(real.sum())
            total += float(loss.detach()) * n
            positions += n
        if log is not None:
            log(epoch + 1, total / max(positions, 1), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    model.eval()
    return model, seconds


# ---------------------------------------------------------------------------------------------
# inference


@torch.no_grad()
def last_hidden(model: SASRec, sequences, batch: int = 256) -> np.ndarray:
    """h at the last window slot of each sequence (eval mode): [len(sequences), d] float32."""
    was_training = model.training
    model.eval()
    out = []
    for begin in range(0, len(sequences), batch):
        w = torch.from_numpy(windows(sequences[begin:begin + batch], model.maxlen))
        out.append(model.hidden(w)[:, -1].numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


@torch.no_grad()
def last_hidden_unpadded(model: SASRec, sequence) -> np.ndarray:
    """The same h computed from only the L real items (no padding rows, pos_emb rows
    maxlen-L .. maxlen-1): the reference the padded computation must agree with."""
    was_training = model.training
    model.eval()
    tail = torch.as_tensor(np.asarray(sequence, dtype=np.int64)[-model.maxlen:])[None]
    h = model.hidden(tail)[0, -1].numpy()
    model.train(was_training)
    return h


@torch.no_grad()
def scores(model: SASRec, sequences) -> np.ndarray:
    """score(seq, item) = h_last . item_emb[item] for items 1..I: [len(sequences), I] float32;
    column j is item index j+1."""
    h = torch.from_numpy(last_hidden(model, sequences))
    return (h @ model.item_emb.weight[1:].T).numpy()


def state_dict_from_tensors(tensors: dict) -> dict:
    """A loadable state_dict from RecServe's weights.safetensors tensors (conv weights get back
    their kernel dimension; the serving data (sequences, user states, history) is dropped)."""
    out = {}
    for name, value in tensors.items():
        if name.startswith(("sequence_", "seen_")) or name in ("user_states", "item_popularity"):
            continue
        t = torch.from_numpy(np.array(value, dtype=np.float32))
        if name.startswith("forward_layers.") and name.endswith(".weight"):
            t = t.unsqueeze(-1)
        out[name] = t
    return out
