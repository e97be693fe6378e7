"""Voice conversion, audio in and audio out: RVC's pipeline (``pipeline.VoicePipeline``) on engines, the
audio reading, resampling and writing around it (``audio``), the voice's retrieval index (``retrieval``),
what ``rvc-compile convert`` opens (``voice``) and the eager torch reference engines (``eager``).

numpy, scipy, soundfile and soxr (imported on use); faiss only for an index; torch only in ``eager``.
"""
