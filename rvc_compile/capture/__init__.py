"""Graph capture: a component's torch model -> ONNX with symbolic time axes."""
