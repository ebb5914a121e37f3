"""Analyses behind the paper's §4.5 (energy, memory) and §4.6 (biological plausibility).

* :mod:`bimsnn.analysis.energy`: spike sparsity per layer, SynOps vs MACs and an energy
  estimate from Horowitz's (ISSCC 2014, 45 nm) per-operation energies
  (``energy_report``, ``spike_sparsity``).
* :mod:`bimsnn.analysis.memory`: peak training memory against T, BPTT vs the online
  rules, each in a fresh subprocess (``memory_vs_T``, ``plot_memory``).
* :mod:`bimsnn.analysis.plasticity`: the STDP-like window of BPTT / RTRL weight changes
  against the pre/post spike-time difference, fitted with eq. 6 (``pair_window``,
  ``network_window``, ``fit_window``, ``plot_window``).

The submodules are not imported here: ``python -m bimsnn.analysis.<name>`` runs each as a
script, which a package-level import would pre-empt (runpy warns about it).
"""
