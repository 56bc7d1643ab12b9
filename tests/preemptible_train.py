"""A training script that survives preemption (run by tests/test_preemption.py).

    python preemptible_train.py PROJECT_DIR WEIGHTS_OUT [STEP_DELAY]

Trains the exact-resume recipe of ``resume_recipe`` (shuffling, dropout, accumulation 3,
momentum, a scheduler, a registered counter) with ``handle_preemption`` and ``auto_resume``:
stopped by SIGTERM/SIGUSR1 at any step it saves and exits with 75; run again it resumes. Prints
``STEP <rank> <count> <pid>`` after every batch; rank 0 writes the final weights.
"""

from __future__ import annotations

import os
import sys
import time

import resume_recipe
import torch
from safetensors.torch import save_file

from accelerate_core import Accelerator

project, weights_out = sys.argv[1], sys.argv[2]
delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

accelerator = Accelerator(
    cpu=True,
    gradient_accumulation_steps=resume_recipe.ACCUMULATION,
    project_dir=project,
    handle_preemption=True,
    auto_resume=True,
)
model, optimizer, scheduler, loader = accelerator.prepare(*resume_recipe.build(seed=0))
counter = resume_recipe.Counter()
accelerator.register_for_checkpointing(counter)  # auto_resume loads here: everything matches
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
        # One write per line: the ranks share the launch's stdout.
        sys.stdout.write(f"STEP {accelerator.process_index} {counter.count} {os.getpid()}\n")
        sys.stdout.flush()
        time.sleep(delay)
if accelerator.is_main_process:
    weights = accelerator.unwrap_model(model).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, weights_out)
    print(f"DONE {counter.count} {scheduler.get_last_lr()[0]}", flush=True)
accelerator.end_training()
