from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"

# Tiny models: per-op overhead dominates and one thread is fastest (and polite to parallel jobs).
torch.set_num_threads(1)


def reference_file(name: str) -> Path:
    """A file of ../shared/reference, or skip the test saying why."""
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference file {name} not found: {REFERENCE} is absent (it is optional, outside the project)")
    return path


@pytest.fixture
def reference():
    return reference_file


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tests share two cores with other work, and one thread is also
    what makes timings and reductions comparable from run to run."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
