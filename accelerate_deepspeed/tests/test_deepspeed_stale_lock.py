"""A build lock left by a killed DeepSpeed op build: removed with a warning, never waited on
forever; a lock a live build holds is kept and named (issue 17, item 8).

Named to run after the other DeepSpeed tests of this directory have built the op once: the
end-to-end test copies that build into its own ``TORCH_EXTENSIONS_DIR`` (the user's cache is
never touched) and plants the stale lock there. Run alone it builds the op itself (~100 s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from accelerate_core.testing import run_distributed

pytest.importorskip("deepspeed")

from accelerate_deepspeed.build_locks import (
    build_locks,
    clear_stale_build_locks,
    extensions_root,
    holders,
)

OP = "deepspeed_shm_comm"
HOLD = """
import sys, time
from torch.utils.file_baton import FileBaton
baton = FileBaton(sys.argv[1])
assert baton.try_acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_lock_nobody_holds_is_removed_with_a_warning(tmp_path):
    lock = tmp_path / "py311_cpu" / OP / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()  # what a build killed with SIGKILL leaves
    (tmp_path / "py311_cpu" / OP / "build.ninja").write_text("kept")
    assert build_locks(tmp_path) == [lock] and holders(lock) == []
    with pytest.warns(UserWarning) as caught:
        assert clear_stale_build_locks(tmp_path) == [lock]
    assert str(caught[0].message).startswith(
        f"removed the stale build lock {lock}: a build of DeepSpeed's op '{OP}' was killed "
        "before it finished and no running process holds the lock"
    )
    assert not lock.exists() and (lock.parent / "build.ninja").read_text() == "kept"


def test_a_lock_a_live_build_holds_is_kept_and_named(tmp_path):
    lock = tmp_path / OP / "lock"
    lock.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert holders(lock) == [holder.pid]
        with pytest.warns(UserWarning, match=rf"process\(es\) {holder.pid} are building "):
            assert clear_stale_build_locks(tmp_path) == []
        assert lock.exists()
    finally:
        holder.kill()
        holder.wait()


def train_next_to_a_stale_lock() -> dict[str, object]:
    import warnings

    import deepspeed_recipes as R

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accelerator = R.new_accelerator(gradient_accumulation_steps=1)
    model, optimizer, _, inputs, targets = R.build()
    model, optimizer, data = accelerator.prepare(model, optimizer, R.loader(inputs, targets))
    R.train(accelerator, model, optimizer, None, data, epochs=1)
    return {"warnings": [str(w.message) for w in caught], "steps": model.global_steps}


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_deepspeed_trains_next_to_a_stale_lock_of_its_op(tmp_path):
    built = next((p.parent for p in extensions_root().glob(f"*/{OP}/{OP}.so") if p.is_file()), None)
    own = tmp_path / "extensions"
    if built is not None:
        shutil.copytree(built, own / OP, ignore=shutil.ignore_patterns("lock"))
    lock = own / OP / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    started = time.monotonic()
    (out,) = run_distributed(
        train_next_to_a_stale_lock, nprocs=1, timeout=540,
        env={"TORCH_EXTENSIONS_DIR": str(own)},
    )  # fmt: skip
    assert out["steps"] == 23, out
    removed = [w for w in out["warnings"] if w.startswith("removed the stale build lock")]
    assert len(removed) == 1 and f"{lock}:" in removed[0], out["warnings"]
    assert (own / OP / f"{OP}.so").exists()
    print(f"trained in {time.monotonic() - started:.0f} s (op {'copied' if built else 'built'})")
