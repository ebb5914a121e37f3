"""``python -m bimsnn.monitor MODEL.pt RECORDING [RECORDING ...]`` (see bimsnn.monitor.run)."""

from bimsnn.monitor.run import main
from bimsnn.training import main_guard

if __name__ == "__main__":
    main_guard(main)
