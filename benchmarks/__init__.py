"""srlib's benchmarks: scripts that print the tables of docs/benchmarks.md and docs/experiments.md.

Run each from the repository root, as a module or as a file (the same script either way):

    python -m benchmarks.quality --train ../shared/datasets/T91 --bench ../shared/datasets
    python benchmarks/quality.py --train ../shared/datasets/T91 --bench ../shared/datasets

What the scripts share is in `benchmarks.common` (tables, runs in fresh processes, the ISA
limit, the command line as typed); the peer models are in `benchmarks.peers`. Run as a file, a
script first puts the repository root on sys.path (its only path change), so `benchmarks.*`
and `srlib` import alike, installed or not. Results and their commands:
benchmarks/results/README.md.
"""
