"""The small character-level language model every example trains, its data, and the
options the examples share: a module, not an example. The examples import it from their
own folder; benchmarks/ and tests/ put examples/ on sys.path first.

The text is Python's own documentation (the pydoc_data package in every CPython
install), so nothing is downloaded.
"""

import os

import torch
import torch.nn as nn


def load_corpus() -> torch.Tensor:
    """Python's documentation topics as one byte sequence (about 450k characters)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


class CharTransformer(nn.Module):
    """A GPT-style decoder over bytes."""

    def __init__(self, width=128, layers=2, heads=4, context=64, vocab=256):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(context, width))
        block = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, tokens):
        n = tokens.shape[1]
        x = self.embed(tokens) + self.position[:n]
        x = self.blocks(x, mask=self.causal[:n, :n], is_causal=True)
        return self.head(self.norm(x))


def add_data_arguments(parser):
    """The batch, context and seed options every example shares."""
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)


def use_a_share_of_the_cores():
    """The ranks of a machine share its cores: OMP_NUM_THREADS when a launcher sets it
    (netlab does), else the cores divided among torchrun's local ranks."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0)
                          or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def batches(corpus, rank, world_size, batch_size, context, seed):
    """An endless stream of (input, target) batches; each rank draws its own."""
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    while True:
        starts = torch.randint(0, len(corpus) - context - 1, (batch_size,), generator=g)
        window = torch.stack([corpus[s : s + context + 1] for s in starts.tolist()])
        yield window[:, :-1], window[:, 1:]
