"""fastfit's benchmark harness: ``python -m benchmarks`` (``--quick`` for a one-minute smoke run).

It trains the same MLPs on the same random data with fastfit, fastfit's NumPy
reference and each installed peer (PyTorch eager with fused Adam, scikit-learn's
MLPClassifier, JAX with jit and lax.scan), every (framework, workload) pair in a
fresh subprocess with the same thread count, and reports samples/s, fastfit's
ratio to each peer, its fraction of the GEMM-bound limit measured in the same
run, peak memory per process, fastfit's memory_report against measured memory,
and the exact versions and BLAS configuration. See benchmarks/README.md.

Modules, one idea each:
- workloads:   the networks, batch sizes and the shared random data
- timing:      warm-up, sizing each repeat to ~0.5-2 s, median of repeats
- frameworks/: one trainer per framework, all with the same two-method interface
- worker:      what runs inside each subprocess (pins threads, measures memory)
- procs:       launching workers with identical thread settings
- gemm_bound:  the GEMMs a training step does, timed with the BLAS fastfit uses
- memory:      memory_report against measured peak RSS over batch sizes
- environment: versions and BLAS configuration
- report:      targets, Markdown and JSON
- run:         the whole run, in order
"""
