"""A training script that crashes on every attempt but the last (run by tests/test_restarts.py).

    accel launch --num-processes 2 --max-restarts N restart_train.py PROJECT_DIR WEIGHTS_OUT N

The exact-resume recipe of ``resume_recipe`` with ``auto_resume``: a checkpoint every 2 steps;
attempt n (``TORCHELASTIC_RESTART_COUNT``) crashes on rank n % 2 after step 2n + 1, between two
checkpoints, so every restart redoes a step. Rank 0 of the last attempt writes the weights.
"""

from __future__ import annotations

import os
import sys

import resume_recipe
import torch
from safetensors.torch import save_file

from accelerate_core import Accelerator, ProjectConfiguration

project, weights_out, crashes = sys.argv[1], sys.argv[2], int(sys.argv[3])
attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

accelerator = Accelerator(
    cpu=True,
    gradient_accumulation_steps=resume_recipe.ACCUMULATION,
    project_config=ProjectConfiguration(project, total_limit=2),
    auto_resume=True,
)
model, optimizer, scheduler, loader = accelerator.prepare(*resume_recipe.build(seed=0))
counter = resume_recipe.Counter()
accelerator.register_for_checkpointing(counter)
for _epoch in range(loader.iteration, resume_recipe.EPOCHS):
    for x, y in loader:
        with accelerator.accumulate(model):
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        counter.count += 1
        if counter.count % 2 == 0:
            accelerator.save_state()
        crash_here = attempt < crashes and counter.count == 2 * attempt + 1
        if crash_here and accelerator.process_index == attempt % 2:
            raise RuntimeError(f"crash of attempt {attempt} after step {counter.count}")
if accelerator.is_main_process:
    weights = accelerator.unwrap_model(model).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, weights_out)
    sys.stdout.write(f"DONE attempt {attempt} steps {counter.count}\n")
accelerator.end_training()
