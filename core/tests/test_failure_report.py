"""The failure summary of a launch, built from torch's own failure records."""

from __future__ import annotations

import signal

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from accelerate_core.launchers import describe_failure


def test_a_rank_without_an_error_file_is_described_in_words_not_as_none(tmp_path):
    """torch records ``<NONE>`` as the message of a process that wrote no error file (killed,
    or exited outside Python); the summary must not print it."""
    killed = ProcessFailure(0, 101, -int(signal.SIGKILL), str(tmp_path / "absent-0.json"))
    exited = ProcessFailure(1, 102, 3, str(tmp_path / "absent-1.json"))
    assert exited.error_file_data["message"] == "<NONE>"  # what torch gives us
    text, code = describe_failure(ChildFailedError("train.py", {1: exited, 0: killed}))
    assert "<NONE>" not in text
    assert (
        text.splitlines()[0] == "rank 1 (local rank 1, pid 102) failed first: it exited with code 3"
    )
    assert "(no traceback recorded: the process exited without raising in Python)" in text
    assert "  rank 0: signal SIGKILL" in text.splitlines()
    assert code == 3
