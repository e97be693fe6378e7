"""Per-voice weight binding: compile an architecture once, then give each voice its own weights.

Voices of one architecture (version, rate, f0, layer widths) built with one recipe share the same
graph; only the constants differ. With ``source.bind_weights`` the build:

1. captures and passes the architecture twice, from two *probe* voices (seeded random weights of the
   voice's exact architecture, every tensor distinct), through the ordinary cached stages, each checked
   at every length like any build. Every later voice of that architecture hits these entries;
2. works out, once per architecture (stage ``architecture``), which graph constant is which weight of
   the torch model after the recipe's torch passes: a constant equal in both probe graphs belongs to
   the architecture (windows, shapes); one that differs must equal, in both, the same weight of its
   probe's model, else binding is refused with the names of the constants it cannot recompute (a
   constant folded from several weights, as ``fold_speaker`` makes);
3. binds (stage ``bind``): runs the torch passes on this voice's weights (no export), writes the
   architecture graph with its weights in place, and hands it to the backend stage, whose check at
   every length against this voice's own fp32 reference, and the artifact's golden and latency gates,
   are those of a full build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import BuildError
from .records import BuildContext, GraphRecord, Reference, SourceRecord, pass_params

BINDING_FILE = "binding.json"
PROBE_SEEDS = (1, 2)
PROBE_NOISE = 1e-2  # relative: added to every probe tensor, so no two tensors (LayerNorm's ones) are equal
BINDING_FORMAT = 2


class ProbeWeights(Mapping[str, Any]):
    """Seeded random weights of ``spec``'s architecture, made on first use (a cached build never does)."""

    def __init__(self, component: Any, spec: Any, seed: int):
        self.component, self.spec, self.seed = component, spec, seed
        self._weights: dict[str, Any] | None = None

    def _made(self) -> dict[str, Any]:
        if self._weights is None:
            import torch

            torch.manual_seed(self.seed)
            model = self.component.build_model(self.spec, None)
            generator = torch.Generator().manual_seed(self.seed)
            weights = {}
            for name, tensor in model.state_dict().items():
                tensor = tensor.detach().clone()
                if tensor.is_floating_point():
                    scale = float(tensor.abs().mean()) or 1.0
                    tensor += torch.randn(tensor.shape, generator=generator) * (PROBE_NOISE * scale)
                weights[name] = tensor
            self._weights = weights
        return self._weights

    def __getitem__(self, key: str) -> Any:
        return self._made()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._made())


def probe_source(ctx: BuildContext, source: SourceRecord, seed: int) -> SourceRecord:
    """A source with probe weights of ``source``'s architecture; its cache key is the architecture and seed."""
    spec = source.loaded.spec
    digest = hashlib.sha256(json.dumps({"probe": seed, "format": BINDING_FORMAT, "noise": PROBE_NOISE, "kind": ctx.component.KIND,
                                        "spec": spec.to_dict()}, sort_keys=True, default=str).encode()).hexdigest()
    weights = ProbeWeights(ctx.component, spec, seed)
    loaded = dataclasses.replace(source.loaded, path=Path(f"probe-{seed}"), sha256=digest, weights=weights,
                                 description={"probe": seed}, cache_inputs={"probe": digest})
    return SourceRecord(loaded=loaded, reference=Reference(ctx.component, spec, weights, ctx.threads, stages=ctx.stages, model_key=digest))


def _constant_protos(model: Any) -> dict[str, Any]:
    """Every constant tensor of an ONNX graph (initializers, Constant nodes' values) by a stable name."""
    protos = {f"initializer:{t.name}": t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    protos[f"constant:{node.output[0]}"] = attribute.t
    return protos


def _graph_constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {name: numpy_helper.to_array(proto) for name, proto in _constant_protos(model).items()}


def torch_tensors(model: Any) -> dict[str, np.ndarray]:
    """The torch model's parameters and buffers (persistent or not) as fp32 arrays: what a graph folds in."""
    tensors = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            tensors[name] = tensor.detach().float().contiguous().numpy()
    return tensors


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _match(a: np.ndarray, b: np.ndarray, indexes: list[dict[str, list[str]]]) -> dict[str, Any] | None:
    """The one model tensor both probes' constants ``a``, ``b`` are, as stored or with their axes
    permuted (an exporter stores a Linear's weight transposed for MatMul): ``{"tensor", "perm"}``."""
    import itertools

    for perm in itertools.permutations(range(a.ndim)):
        found = set(indexes[0].get(_digest(np.transpose(a, perm)), [])) & set(indexes[1].get(_digest(np.transpose(b, perm)), []))
        if len(found) == 1:
            return {"tensor": found.pop(), "perm": list(perm)}
    return None


def binding_map(graphs: tuple[Any, Any], tensors: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """For two probe graphs and their probe models' tensors: graph constant -> ``{"tensor": model tensor
    name, "perm": the constant's axes in the tensor's order}``, for every constant that differs between
    the probes. Raises BuildError where that is not well defined."""
    first, second = (_graph_constants(graph) for graph in graphs)
    ops = [[(node.op_type, tuple(node.input), tuple(node.output)) for node in graph.graph.node] for graph in graphs]
    if set(first) != set(second) or ops[0] != ops[1]:
        raise BuildError("source.bind_weights: the two probe voices gave graphs of different structure, so this recipe's graph "
                         "depends on the weights' values (not only the architecture); build without binding")
    by_digest = []
    for named in tensors:
        index: dict[str, list[str]] = {}
        for name, array in named.items():
            index.setdefault(_digest(array), []).append(name)
        by_digest.append(index)
    mapping, unbound = {}, []
    for name in sorted(first):
        a, b = first[name], second[name]
        if a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b):
            continue  # the architecture's own constant
        found = _match(a, b, by_digest) if a.dtype == np.float32 and a.shape == b.shape and a.ndim <= 5 else None
        if found is None:
            unbound.append(name)
        else:
            mapping[name] = found
    if unbound:
        shown = ", ".join(n.split(":", 1)[1] for n in unbound[:3])
        raise BuildError(f"source.bind_weights: the graph holds {len(unbound)} constant(s) computed from several weights or changed by a pass "
                         f"({shown}{', ...' if len(unbound) > 3 else ''}), which binding cannot recompute; build without binding")
    return mapping


def bind_constants(model: Any, mapping: Mapping[str, Mapping[str, Any]], tensors: Mapping[str, np.ndarray], *, where: str) -> None:
    """Write ``tensors`` into ``model``'s constants per ``mapping`` (in place); shapes must agree."""
    from onnx import numpy_helper

    targets = _constant_protos(model)
    for constant, bound in mapping.items():
        tensor_name, perm = bound["tensor"], list(bound["perm"])
        if tensor_name not in tensors:
            raise BuildError(f"{where}: has no weight {tensor_name}, which the architecture graph binds")
        proto = targets[constant]
        value = np.asarray(tensors[tensor_name], dtype=np.float32)
        dims = tuple(proto.dims)
        if value.size != int(np.prod(dims, dtype=np.int64)):
            raise BuildError(f"{where}: weight {tensor_name} has shape {value.shape}, the architecture graph's constant has {dims}")
        value = np.transpose(value.reshape([dims[axis] for axis in perm]), np.argsort(perm))
        proto.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), proto.name))


def architecture(ctx: BuildContext, source: SourceRecord, capture_graph: Any) -> tuple[GraphRecord, Any]:
    """The architecture's graph (the first probe's, after every pass) and its binding map's cache entry.

    ``capture_graph(ctx, source) -> GraphRecord``: capture and the ONNX passes (the build's own)."""
    from ..passes import PASSES  # noqa: F401  (the passes register themselves)
    from .steps import GRAPH_FILE, torch_graph

    probes = [probe_source(ctx, source, seed) for seed in PROBE_SEEDS]
    graphs = [capture_graph(ctx, probe) for probe in probes]

    def produce(folder: Path) -> dict[str, Any]:
        import onnx

        models = tuple(onnx.load(str(graph.entry.file(GRAPH_FILE))) for graph in graphs)
        tensors = []
        for probe in probes:
            state, _, _ = torch_graph(ctx.component, probe.loaded.spec, probe.loaded.weights, ctx.torch_passes, ctx.workdir)
            tensors.append(torch_tensors(state.model))
        mapping = binding_map(models, (tensors[0], tensors[1]))
        (folder / BINDING_FILE).write_text(json.dumps({"format": BINDING_FORMAT, "constants": mapping}, indent=1, sort_keys=True))
        ctx.log(f"architecture: {len(mapping)} graph constants bind to the voice's weights")
        return {"constants": len(mapping)}

    entry = ctx.stages.run("architecture", produce, inputs={"probe1": graphs[0].key, "probe2": graphs[1].key}, params={"format": BINDING_FORMAT},
                           libraries=("onnx", "torch", "numpy"))
    return graphs[0], entry


def bind(ctx: BuildContext, source: SourceRecord, capture_graph: Any) -> GraphRecord:
    """This voice's graph: the architecture's, its weights bound in (see the module docstring)."""
    import torch

    from .steps import DERIVED_FILE, GRAPH_FILE, _derived_reference, entry_model, torch_graph

    template, arch = architecture(ctx, source, capture_graph)
    derived_now: dict[str, Any] = {}

    def produce(folder: Path) -> dict[str, Any]:
        import onnx

        state, records, derived = torch_graph(ctx.component, source.loaded.spec, source.loaded.weights, ctx.torch_passes, ctx.workdir)
        if state.spec.to_dict() != template.spec.to_dict():
            raise BuildError(f"{source.loaded.path}: after the recipe's torch passes this voice's architecture differs from the compiled one; build without binding")
        mapping = json.loads(arch.file(BINDING_FILE).read_text())["constants"]
        model = onnx.load(str(template.entry.file(GRAPH_FILE)))
        bind_constants(model, mapping, torch_tensors(state.model), where=str(source.loaded.path))
        onnx.save(model, str(folder / GRAPH_FILE))
        if derived is not None:
            torch.save(derived, folder / DERIVED_FILE)
            derived_now["record"] = _derived_reference(ctx, source, derived)
        ctx.log(f"bound {len(mapping)} weights of {source.loaded.path.name} into the architecture graph")
        return {"bound": len(mapping)}

    entry = ctx.stages.run("bind", produce, inputs={"architecture": arch.key, "graph": template.key, **source.loaded.cache_inputs},
                           params={"passes": pass_params(ctx.torch_passes)}, libraries=("onnx", "torch", "numpy"))
    spec, weights, reference = entry_model(ctx, source, entry, derived_now)
    record = {"name": "bind_weights", "stage": "onnx", "params": {"architecture": arch.key},
              "notes": f"{entry.meta['bound']} weights bound into the graph compiled for this architecture (probe voices, checked at every length)"}
    # The probes' checks prove the graph; this voice's own are the backend stage's, at every length.
    return dataclasses.replace(template, entry=entry, key=entry.key, spec=spec, weights=weights, reference=reference,
                               passes=(*template.passes, record), checks=())
