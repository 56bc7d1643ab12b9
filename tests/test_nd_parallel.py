"""N-D parallelism on 4 real processes (torchrun, gloo, CPU): ParallelismConfig meshes, data
sharded by data-parallel rank, FSDP / HSDP / TP / TP x FSDP training against a one-process
reference, exact resume under TP x FSDP, and the layouts every rank must refuse."""

from __future__ import annotations

import nd_recipes
import pytest
import torch

from accelerate_core.testing import run_distributed

pytestmark = pytest.mark.multiprocess

LAYOUTS = {
    "fsdp4": ({"dp_shard_size": 4}, None),
    "hsdp2x2": ({"dp_replicate_size": 2, "dp_shard_size": 2}, None),
    "tp2xfsdp2": ({"dp_shard_size": 2, "tp_size": 2}, None),
    "tp4-sequence-parallel": ({"tp_size": 4}, "sequence_parallel"),
}
MESHES = {
    "fsdp4": ((("dp_shard",), (4,)), {"dp": 4, "dp_shard_cp": 4, "dp_cp": 4}),
    "hsdp2x2": ((("dp_replicate", "dp_shard"), (2, 2)), {"dp": 4, "dp_shard_cp": 2, "dp_cp": 4}),
    "tp2xfsdp2": ((("dp_shard", "tp"), (2, 2)), {"dp": 2, "dp_shard_cp": 2, "dp_cp": 2}),
    "tp4-sequence-parallel": ((("tp",), (4,)), {}),
}
PLACEMENTS = {  # FSDP shards dim 0; TP splits wq by rows (colwise) and replicates the norm
    "fsdp4": (["Shard(dim=0)"], ["Shard(dim=0)"]),
    "hsdp2x2": (["Replicate()", "Shard(dim=0)"], ["Replicate()", "Shard(dim=0)"]),
    "tp2xfsdp2": (["_StridedShard(dim=0, sf=2)", "Shard(dim=0)"], ["Shard(dim=0)", "Replicate()"]),
    "tp4-sequence-parallel": (["Shard(dim=0)"], ["Replicate()"]),
}


@pytest.fixture(scope="module")
def reference():
    return nd_recipes.reference()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_trains_like_one_process(name, reference):
    sizes, plan = LAYOUTS[name]
    results = run_distributed(nd_recipes.train_layout, sizes, plan, nprocs=4, timeout=240)
    mesh, flattened = MESHES[name]
    wq, norm = PLACEMENTS[name]
    dp = results[0]["dp_size"]
    for rank, out in enumerate(results):
        assert out["backend"] == "fsdp"  # chosen for a sharding layout when none is named
        assert out["mesh"] == mesh and out["flattened"] == flattened
        coordinate = dict(zip(mesh[0], torch.unravel_index(torch.tensor(rank), mesh[1])))
        assert out["ranks"] == {  # HF's rank properties: the coordinate along each dim
            "tp": int(coordinate.get("tp", 0)),
            "dp_replicate": int(coordinate.get("dp_replicate", 0)),
            "dp_shard": int(coordinate.get("dp_shard", 0)),
        }
        assert out["placements"] == {
            "layers.0.attention.wq.weight": wq,
            "layers.0.attention_norm.weight": norm,
        }
        # Every step's global loss and gradient norm match the one-process reference.
        assert out["losses"] == pytest.approx(reference["losses"], abs=1e-5)
        assert out["norms"] == pytest.approx(reference["norms"], rel=1e-5)
        # reduce() counts each data-parallel rank once, never a tensor-parallel replica.
        assert out["sums"] == pytest.approx([dp * m for m in out["losses"]], rel=1e-6)
        # gather_for_metrics over the eval set: exactly the dataset, once.
        assert out["evaluated"] == list(range(nd_recipes.EVAL_SAMPLES)), rank
    # Data sharded by data-parallel rank: ranks of one TP group read the same batches, the
    # data-parallel ranks read disjoint parts of each global batch.
    tp = 4 // dp
    for step in range(nd_recipes.STEPS):
        global_batch = list(range(step * 8, step * 8 + 8))
        groups = [results[r]["seen"][step] for r in range(0, 4, tp)]
        assert sorted(i for g in groups for i in g) == global_batch
        for r in range(4):
            assert results[r]["seen"][step] == results[r - r % tp]["seen"][step]
    # An iterable dataset is read by the main process alone and dispatched by data-parallel
    # rank: tensor-parallel peers get the same batches, together every sample once.
    for r in range(4):
        assert results[r]["stream"] == results[r - r % tp]["stream"]
        assert all(reader == 0 for batch in results[r]["stream"] for _, reader in batch)
    streamed = [i for r in range(0, 4, tp) for batch in results[r]["stream"] for i, _ in batch]
    assert sorted(streamed) == list(range(16))
    # The final full weights (gathered by get_state_dict) match the reference.
    state = results[0]["state"]
    assert state.keys() == reference["state"].keys()
    worst = max((state[k] - reference["state"][k]).abs().max().item() for k in state)
    assert worst <= 1e-5, worst
    print(f"{name}: largest weight difference from one process {worst:.2e}")


def test_tp_and_fsdp_resume_exactly_and_refuse_another_mesh(tmp_path):
    results = run_distributed(nd_recipes.resume_tp_fsdp, str(tmp_path / "ckpt"), nprocs=4,
                              timeout=300)  # fmt: skip
    for layout in ("tp2xfsdp2", "tp4-sequence-parallel"):  # saved mid-cycle, bit-identical
        assert results[0][layout]["identical"], results[0][layout]["max_diff"]
    for out in results:
        assert out["other_mesh"] == (
            f"CheckpointError: {tmp_path / 'ckpt-tp2xfsdp2'} was saved under the mesh dp_shard=2 "
            "x tp=2 and this run has dp_shard=4; resharding a checkpoint to another mesh is not "
            "supported (the data-parallel ranks would read other batches, so the resume would "
            "not be exact). Resume with the same ParallelismConfig, or load the weights alone "
            "(save_model)"
        )


def test_bad_layouts_are_refused_on_every_rank():
    results = run_distributed(nd_recipes.bad_layouts, nprocs=2, timeout=120)
    assert results[0] == results[1]
    messages = results[0]
    assert messages["product"] == (
        "ConfigurationError: ParallelismConfig dp_replicate_size=1 x dp_shard_size=2 x "
        "tp_size=2 x cp_size=1 = 4 processes, but this run has 2; choose sizes whose product "
        "is 2 (or launch 4 processes)"
    )
    assert messages["sp"].startswith("ConfigurationError: sp_size=2: sequence parallelism is")
    assert messages["cp_on_cpu"].startswith(
        "ConfigurationError: cp_size=2: context parallelism runs attention as a ring"
    )
    assert "use backend 'ddp'" in messages["replicate_only_fsdp"]


def test_reference_is_deterministic(reference):
    again = nd_recipes.reference()
    assert again["losses"] == reference["losses"]
    assert all(torch.equal(again["state"][k], v) for k, v in reference["state"].items())


@pytest.mark.contract
def test_context_parallel_shards_the_sequence_head_and_tail():
    """Contract test: the buffer sharding of maybe_context_parallel on CPU (gloo). Ring
    attention needs CUDA kernels; benchmarks/gpu_context_parallel.py runs it on a GPU."""
    results = run_distributed(nd_recipes.context_parallel_sharding, nprocs=2, timeout=120)
    chunks = {0: [0, 1, 6, 7], 1: [2, 3, 4, 5]}  # 2 * cp chunks, rank r: r and 2cp-1-r
    for rank, out in enumerate(results):
        ids, labels, query = out["inside"]
        assert ids == [chunks[rank]] * 2
        assert labels == [[i + 100 for i in chunks[rank]]] * 2
        assert query == [2.0 * i for i in chunks[rank]]
        # Restored on exit, except no_restore_buffers (labels stay sharded).
        assert out["after"] == ([list(range(8))] * 2, [[i + 100 for i in chunks[rank]]] * 2, 8)
        # What the CPU refusal at Accelerator creation is about: torch has no CP attention here.
        assert out["cpu_attention"].startswith("NotImplementedError: Operator aten._scaled_dot")
        assert out["odd_length"] == (
            "maybe_context_parallel buffer 0 has sequence length 7, which the 2 context-parallel "
            "ranks cannot split evenly; pad the sequences to a multiple of 4 (that also "
            "balances causal attention)"
        )
