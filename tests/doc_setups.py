"""Preludes for documentation code blocks (``<!-- run: setup=NAME -->``): the objects a snippet
takes for granted (a model, an optimizer, a dataloader), made small so every block runs on a CPU
in a second. A reader's own objects take their place."""

TOY = """
import torch

from accelerate_core import Accelerator

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
dataset = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1))
loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True)
"""

# Linears 64 wide (fp8 matmuls need multiples of 16; the first and last stay in high precision).
FP8 = """
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(*(torch.nn.Linear(64, 64) for _ in range(4)))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
"""

# A model of two transformer-like blocks of class Block, the unit FSDP shards.
FSDP = """
import torch

from accelerate_core import Accelerator


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.linear(x))


torch.manual_seed(0)
model = torch.nn.Sequential(Block(), Block(), torch.nn.Linear(16, 1))
dataset = torch.utils.data.TensorDataset(torch.randn(32, 16), torch.randn(32, 1))
loader = torch.utils.data.DataLoader(dataset, batch_size=4)
"""

SETUPS = {"toy": TOY, "fp8": FP8, "fsdp": FSDP}
