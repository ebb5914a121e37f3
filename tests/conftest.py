import pytest

from bimsnn._paths import shared_data_dir


@pytest.fixture
def shared_data():
    """Path to ../shared/data (or $BIMSNN_SHARED_DATA); skips with a reason where absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real shared data not found: set BIMSNN_SHARED_DATA or place it at ../shared/data")
    return path
