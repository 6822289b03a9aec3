"""facehd: detailed 3D face reconstruction research toolkit (HRN, CVPR 2023).

Subpackages and modules:

- ``facehd.mesh``: the :class:`Mesh` value, mesh I/O, vertex normals.
- ``facehd.transforms``: similarity transforms and Procrustes alignment.
- ``facehd.registration``: rigid / similarity ICP.
- ``facehd.distances``: point-to-surface distances, Chamfer, normal error.
- ``facehd.cylinder``: cylindrical maps of a face and FaceScape's CD / MNE on them.
- ``facehd.uv``: UV rasterisation tables, map <-> vertex sampling, position maps, detail normals.
- ``facehd.morphable``: morphable models (BFM loader, the built-in facehd-synth model).
- ``facehd.landmarks``: landmark conventions and landmark-file readers.
- ``facehd.datasets``: ``datasets.yaml`` loading.
- ``facehd.perf``: speed benchmarks (``facehd perf``).
"""

__version__ = "0.1.0"
