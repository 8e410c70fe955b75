"""Record the TensorRT-LLM API surface the adapter uses, from a TensorRT-LLM source tree.

    python tests/llm_stack/engine/trtllm/record_api.py --source ~/TensorRT-LLM \\
        --ref v1.2.1 --commit <sha> --triton 26.07 > tests/llm_stack/engine/trtllm/api_surface.json

`--source` is a checkout of NVIDIA/TensorRT-LLM (or an unpacked wheel, whose C++ sources
are absent: then `--stats-source` names a `jsonSerialization.cpp` to read the iteration
statistics' keys from). Nothing is imported: the Python files are parsed with `ast`, the
C++ file read for its `NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE` lists, so any machine can run it.
The fakes in `fakes.py` are built from its output.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# module file -> the classes recorded from it
CLASSES: dict[str, tuple[str, ...]] = {
    "tensorrt_llm/llmapi/llm_args.py": ("TorchLlmArgs", "KvCacheConfig"),
    "tensorrt_llm/sampling_params.py": ("SamplingParams", "GuidedDecodingParams"),
    "tensorrt_llm/executor/result.py": ("CompletionOutput", "GenerationResultBase"),
    "tensorrt_llm/llmapi/llm.py": ("RequestOutput", "BaseLLM", "_TorchLLM", "LLM"),
}
# Where a base class named by a recorded class may be defined.
BASE_MODULES = (
    "tensorrt_llm/llmapi/llm_args.py",
    "tensorrt_llm/sampling_params.py",
    "tensorrt_llm/executor/result.py",
    "tensorrt_llm/llmapi/llm.py",
)
STATS_FILE = "cpp/tensorrt_llm/executor/jsonSerialization.cpp"
STATS_TYPES = ("IterationStats", "KvCacheStats", "InflightBatchingStats")
# Modules the adapter imports (or once did), recorded as present or not.
MODULES = (
    "tensorrt_llm",
    "tensorrt_llm.llmapi",
    "tensorrt_llm.sampling_params",
    "tensorrt_llm.executor",
    "tensorrt_llm.executor.utils",
)
# Exception classes whose home the adapter imports.
EXCEPTIONS: dict[str, str] = {"RequestError": "tensorrt_llm/executor/utils.py"}


@dataclass
class ClassInfo:
    """What one class definition declares, before its bases are merged in."""

    name: str
    bases: list[str]
    fields: dict[str, str] = field(default_factory=dict)  # name -> annotation (source)
    required: list[str] = field(default_factory=list)  # fields without a default
    properties: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)  # self.<name> = ... in methods
    methods: dict[str, list[str]] = field(default_factory=dict)  # name -> parameter names


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        names.add(ast.unparse(target))
    return names


def _is_init_false(value: ast.expr | None) -> bool:
    """`field(..., init=False)`: a dataclass field the constructor does not take."""
    if not isinstance(value, ast.Call):
        return False
    return any(
        kw.arg == "init" and isinstance(kw.value, ast.Constant) and kw.value.value is False
        for kw in value.keywords
    )


def _has_default(value: ast.expr | None) -> bool:
    if value is None:
        return False
    if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("Field"):
        # pydantic Field(...) without a default (or default=...) is required
        if value.args and not (
            isinstance(value.args[0], ast.Constant) and value.args[0].value is Ellipsis
        ):
            return True
        return any(kw.arg in ("default", "default_factory") for kw in value.keywords)
    return True


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if args.vararg is not None:
        names.append("*" + args.vararg.arg)
    if args.kwarg is not None:
        names.append("**" + args.kwarg.arg)
    return [n for n in names if n not in ("self", "cls")]


def read_class(node: ast.ClassDef) -> ClassInfo:
    """Fields, properties, instance attributes and public methods one class declares."""
    info = ClassInfo(node.name, [ast.unparse(b).split(".")[-1] for b in node.bases])
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            name, annotation = item.target.id, ast.unparse(item.annotation)
            if name.startswith("_") or annotation.startswith(("ClassVar", "typing.ClassVar")):
                continue
            if _is_init_false(item.value):
                info.properties.append(name)  # readable, not a constructor argument
                continue
            info.fields[name] = annotation
            if not _has_default(item.value):
                info.required.append(name)
        elif isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            decorators = _decorator_names(item)
            if "property" in decorators or "cached_property" in decorators:
                info.properties.append(item.name)
            elif not item.name.startswith("_") or item.name == "__init__":
                info.methods[item.name] = _parameters(item)
            for sub in ast.walk(item):
                targets: list[ast.expr] = []
                if isinstance(sub, ast.Assign):
                    targets = list(sub.targets)
                elif isinstance(sub, ast.AnnAssign):
                    targets = [sub.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                        and not target.attr.startswith("_")
                        and target.attr not in info.attributes
                    ):
                        info.attributes.append(target.attr)
    return info


def index_classes(source: Path, modules: tuple[str, ...]) -> dict[str, ClassInfo]:
    """Every top-level class of the modules, by name (a later module wins a clash)."""
    classes: dict[str, ClassInfo] = {}
    for module in modules:
        tree = ast.parse((source / module).read_text(), filename=module)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = read_class(node)
    return classes


def merged(name: str, classes: dict[str, ClassInfo]) -> dict[str, Any]:
    """A class with what its bases (defined in the scanned modules) declare, bases first."""
    order: list[ClassInfo] = []

    def visit(cls_name: str) -> None:
        info = classes.get(cls_name)
        if info is None or info in order:
            return
        for base in info.bases:
            visit(base)
        order.append(info)

    visit(name)
    if not order:
        raise SystemExit(f"class {name} not found")
    result: dict[str, Any] = {
        "bases": [info.name for info in order[:-1]],
        "fields": {},
        "required": [],
        "properties": [],
        "attributes": [],
        "methods": {},
    }
    for info in order:
        result["fields"].update(info.fields)
        result["required"] = [
            r for r in [*result["required"], *info.required] if r in result["fields"]
        ]
        for key in ("properties", "attributes"):
            result[key] = sorted({*result[key], *getattr(info, key)})
        result["methods"].update(info.methods)
    result["required"] = sorted(set(result["required"]))
    return result


_MACRO = re.compile(r"NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE\s*\(\s*(\w+)\s*,(.*?)\);", re.DOTALL)


def stats_keys(text: str) -> dict[str, list[str]]:
    """The JSON keys of the iteration statistics' types, from jsonSerialization.cpp."""
    found: dict[str, list[str]] = {}
    for match in _MACRO.finditer(text):
        body = re.sub(r"//[^\n]*", "", match.group(2))
        keys = [k.strip() for k in body.split(",") if k.strip()]
        if match.group(1) in STATS_TYPES:
            found[match.group(1)] = keys
    missing = set(STATS_TYPES) - set(found)
    if missing:
        raise SystemExit(f"no JSON keys found for {sorted(missing)}")
    return found


def version_of(source: Path) -> str:
    text = (source / "tensorrt_llm/version.py").read_text()
    match = re.search(r"__version__\s*=\s*[\"']([^\"']+)", text)
    if match is None:
        raise SystemExit("no __version__ in tensorrt_llm/version.py")
    return match.group(1)


def exception_defined(source: Path, name: str, module: str) -> bool:
    path = source / module
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body)


def _module_path(source: Path, name: str) -> Path | None:
    base = source.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_exists(source: Path, name: str) -> bool:
    return _module_path(source, name) is not None


def record(source: Path, stats_source: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The recorded surface: versions and provenance, classes, stats keys, exceptions."""
    classes = index_classes(source, BASE_MODULES)
    recorded: dict[str, Any] = {
        "tensorrt_llm_version": version_of(source),
        **meta,
        "classes": {},
        "iteration_stats": stats_keys(stats_source.read_text()),
        "exceptions": {
            name: module
            for name, module in EXCEPTIONS.items()
            if exception_defined(source, name, module)
        },
        "modules": {name: module_exists(source, name) for name in MODULES},
    }
    for module, names in CLASSES.items():
        for name in names:
            recorded["classes"][name] = {"module": module, **merged(name, classes)}
    return recorded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="TensorRT-LLM source tree")
    parser.add_argument("--ref", required=True, help="the tag (or branch) the tree is at")
    parser.add_argument("--commit", required=True, help="the commit the tree is at")
    parser.add_argument("--triton", required=True, help="the NGC Triton release shipping it")
    parser.add_argument("--stats-source", type=Path, help=f"default: <source>/{STATS_FILE}")
    parser.add_argument("--note", default="", help="how the tree was obtained")
    args = parser.parse_args(argv)
    meta = {"ref": args.ref, "commit": args.commit, "triton_release": args.triton}
    if args.note:
        meta["note"] = args.note
    stats_source = args.stats_source or args.source / STATS_FILE
    json.dump(record(args.source, stats_source, meta), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
