"""ViT-B/16 (Dosovitskiy et al., 2020), defined here so that nothing is downloaded or imported from
torchvision: 16x16 patches, a class token, 12 pre-norm encoder layers of 12-head self-attention.

A --model-file must define exactly one class, so the encoder layers are ModuleDicts built by a
function. The parameter names match torchvision's ``vit_b_16`` (``encoder.layers.encoder_layer_0.
self_attention.in_proj_weight`` ...), so its state dicts are meant to load into this class.
"""

from typing import cast

import torch
from torch import nn

IMAGE_SIZE = 224
PATCH = 16
WIDTH = 768
LAYERS = 12
HEADS = 12
MLP_WIDTH = 3072
LN_EPS = 1e-6


def _encoder_layer() -> nn.ModuleDict:
    return nn.ModuleDict({
        "ln_1": nn.LayerNorm(WIDTH, eps=LN_EPS),
        "self_attention": nn.MultiheadAttention(WIDTH, HEADS, batch_first=True),
        "ln_2": nn.LayerNorm(WIDTH, eps=LN_EPS),
        # indices 0 and 3 as torchvision's MLP block (Linear, GELU, Dropout, Linear, Dropout)
        "mlp": nn.Sequential(nn.Linear(WIDTH, MLP_WIDTH), nn.GELU(), nn.Identity(), nn.Linear(MLP_WIDTH, WIDTH)),
    })


class VisionTransformerB16(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        tokens = (IMAGE_SIZE // PATCH) ** 2 + 1
        self.conv_proj = nn.Conv2d(3, WIDTH, PATCH, PATCH)
        self.class_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.encoder = nn.ModuleDict({
            "layers": nn.ModuleDict({f"encoder_layer_{i}": _encoder_layer() for i in range(LAYERS)}),
            "ln": nn.LayerNorm(WIDTH, eps=LN_EPS),
        })
        self.encoder.register_parameter("pos_embedding", nn.Parameter(torch.empty(1, tokens, WIDTH).normal_(std=0.02)))
        self.heads = nn.ModuleDict({"head": nn.Linear(WIDTH, num_classes)})
        fan_in = 3 * PATCH * PATCH
        nn.init.trunc_normal_(self.conv_proj.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(cast(torch.Tensor, self.conv_proj.bias))
        for module in self.modules():
            if isinstance(module, nn.Sequential):  # the MLP blocks
                for index in (0, 3):
                    linear = cast(nn.Linear, module[index])
                    nn.init.xavier_uniform_(linear.weight)
                    nn.init.normal_(linear.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # [batch, patches, width]
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + cast(torch.Tensor, self.encoder.pos_embedding)
        for module in cast(nn.ModuleDict, self.encoder["layers"]).values():
            layer = cast(nn.ModuleDict, module)
            y = layer["ln_1"](x)
            y, _ = layer["self_attention"](y, y, y, need_weights=False)
            x = x + y
            x = x + layer["mlp"](layer["ln_2"](x))
        x = self.encoder["ln"](x)
        return self.heads["head"](x[:, 0])
