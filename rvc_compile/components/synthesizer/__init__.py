"""The RVC synthesizer: checkpoint reader, spec, model, the eager reference, inputs and the NSF source."""
