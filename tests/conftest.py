import pytest

from bimsnn.paths import shared_data_dir


@pytest.fixture
def shared_data():
    """Path to ../shared/data (or $BIMSNN_SHARED_DATA); skips with a reason where absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real shared data not found: set BIMSNN_SHARED_DATA or place it at ../shared/data")
    return path


@pytest.fixture(scope="session")
def recipe():
    """``recipe("seizure_detection")``: a recipe script loaded as a module, by file path (no
    import-path edits), once per session."""
    import importlib.util
    import sys

    from bimsnn.paths import repo_root

    cache = {}

    def load(name: str):
        if name not in cache:
            mod_name = f"bimsnn_recipe_{name}"
            spec = importlib.util.spec_from_file_location(
                mod_name, repo_root() / "recipes" / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod  # dataclasses resolve annotations through it
            spec.loader.exec_module(mod)
            cache[name] = mod
        return cache[name]
    return load
