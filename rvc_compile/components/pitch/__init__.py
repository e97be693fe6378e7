"""Pitch for the conversion pipeline: RMVPE as a compiled component (``adapter.RmvpeComponent``, kind
``rmvpe``) and RVC's classic trackers (``trackers``: pm, harvest, dio).

- ``spec``: RMVPE's widths (the official ``rmvpe.pt`` by default);
- ``model`` (torch): the network in the official state-dict layout, with RVC's ``mel2hidden`` inside;
- ``checkpoint`` (torch): read and validate an ``rmvpe.pt``;
- ``host`` (numpy): RVC's log-mel input and its salience decoding (``rmvpe_f0``);
- ``trackers`` (numpy, pyworld, parselmouth): f0 as RVC's ``get_f0`` computes it, plus ``shift``;
- ``estimator`` (numpy): ``CompiledPitch``, what ``rvc_compile.runtime.load`` returns for an RMVPE artifact;
- ``synthetic`` (torch): random-weight ``rmvpe.pt`` files for tests and measurements.

numpy only at import: the runtime imports this package without torch.
"""
