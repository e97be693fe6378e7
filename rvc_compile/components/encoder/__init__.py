"""The content encoder (ContentVec / HuBERT-base) as a compiled component (``adapter.ContentEncoderComponent``,
kind ``content-encoder``): 16 kHz audio -> the content features RVC voices take (v2: layer 12, 768-dim;
v1: layer 9 through final_proj, 256-dim).

- ``spec`` (plain Python): the HuBERT architecture and the output choice;
- ``folder`` (torch): read and validate a Transformers folder (config.json + safetensors or .bin);
- ``model`` (torch, transformers): the inference model, transformers' ``HubertModel`` cut to the output layer;
- ``inputs`` (numpy; soundfile and soxr inside): real-speech example inputs and calibration audio;
- ``compiled`` (numpy): ``CompiledEncoder``, what ``rvc_compile.runtime.load`` returns (``encode``);
- ``synthetic`` (torch, transformers): random-weight folders for tests and measurements.

numpy only at import: the runtime imports this package without torch.
"""
