"""A small Transformer-encoder text classifier over the hashed-word ids of handlers.tokenizer."""

import torch
from torch import nn

VOCAB_SIZE = 8192
MAX_LENGTH = 128
NUM_LABELS = 4


class TextClassifier(nn.Module):
    def __init__(self, vocab_size: int = VOCAB_SIZE, dim: int = 128, layers: int = 2, heads: int = 4,
                 max_length: int = MAX_LENGTH, num_labels: int = NUM_LABELS) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Embedding(max_length, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_labels)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: [batch, length] int64, 0 = padding."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.position(positions)
        padding = input_ids == 0
        x = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)
