"""Read what trackers wrote, with each library's own reader (tests only).

TensorBoard: its ``EventAccumulator`` and hparams protobufs. MLflow: ``MlflowClient``.
W&B offline: the run's ``.wandb`` transaction log, split into records by the log format W&B
documents (LevelDB-style 32 KiB blocks) and decoded with W&B's own ``Record`` protobuf; wandb
0.31 ships no Python reader for it. trackio: its ``SQLiteStorage``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import torch


def training_losses(steps: int = 5, seed: int = 0) -> list[float]:
    """A hand-written loop (no Accelerator): the losses the tracking tests expect to read back."""
    model, optimizer, data = regression_problem(seed)
    losses = []
    for step in range(steps):
        x, y = data[step]
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def regression_problem(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, list]:
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 4, generator=generator))
        model.bias.zero_()
    data = [(torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator))
            for _ in range(16)]  # fmt: skip
    return model, torch.optim.SGD(model.parameters(), lr=0.1), data


# --------------------------------------------------------------------------- TensorBoard


def event_dirs(root: Path) -> list[Path]:
    return sorted({p.parent for p in Path(root).rglob("events.out.tfevents.*")})


def tensorboard_run(run_dir: Path) -> dict[str, Any]:
    """``{"scalars": {tag: [(step, value)]}, "hparams": {name: value}, "text": {tag: [...]}}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in tags["scalars"]
    }
    hparams: dict[str, Any] = {}
    for content in accumulator.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                hparams[name] = getattr(value, value.WhichOneof("kind"))
    text = {
        tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in accumulator.Tensors(tag)]
        for tag in tags.get("tensors", [])
        if tag.endswith("/text_summary")
    }
    return {"scalars": scalars, "hparams": hparams, "text": text}


# --------------------------------------------------------------------------- MLflow


def mlflow_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Every run of ``experiment``: its params and each metric's full history."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = []
    for run in client.search_runs([found.experiment_id]):
        history = {
            key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics
        }
        runs.append({"params": dict(run.data.params), "metrics": history,
                     "status": run.info.status})  # fmt: skip
    return runs


# --------------------------------------------------------------------------- W&B

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
CHUNK = struct.Struct("<IHB")  # crc32, length, type (1 full, 2 first, 3 middle, 4 last)


def wandb_records(path: Path) -> list[Any]:
    """The protobuf ``Record``s of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    raw = Path(path).read_bytes()
    ident, magic, _ = HEADER.unpack_from(raw)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    position, parts, records = HEADER.size, [], []
    while position + CHUNK.size <= len(raw):
        left = BLOCK - position % BLOCK
        if left < CHUNK.size:
            position += left
            continue
        _, length, kind = CHUNK.unpack_from(raw, position)
        if length == 0 and kind == 0:  # block padding
            position += left
            continue
        parts.append(raw[position + CHUNK.size : position + CHUNK.size + length])
        position += CHUNK.size + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(b"".join(parts)))
            parts = []
    return records


def wandb_run(run_file: Path, wait: float = 30.0) -> dict[str, Any]:
    """``{"project", "config": {key: value}, "history": [{key: value}]}`` of an offline run.

    W&B's service process writes the file; on a loaded machine its last records can land a
    moment after ``finish()`` returned, so the file is read again until the run is complete.
    """
    deadline = time.monotonic() + wait
    while True:
        run = _wandb_run_once(run_file)
        if run["complete"] or time.monotonic() > deadline:
            return {k: v for k, v in run.items() if k != "complete"}
        time.sleep(0.2)


def _wandb_run_once(run_file: Path) -> dict[str, Any]:
    config: dict[str, Any] = {}
    complete = False
    history: list[dict[str, Any]] = []
    project = None
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            project = record.run.project
            config.update(_items(record.run.config.update))
        elif kind == "config":
            config.update(_items(record.config.update))
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "exit":
            complete = True
    config.pop("_wandb", None)
    return {"project": project, "config": config, "history": history,
            "complete": complete and project is not None}  # fmt: skip


def _items(items: Any) -> dict[str, Any]:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def wandb_run_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("wandb/offline-run-*/run-*.wandb"))
