"""A lab's pruning method, declared without touching turboprune: one schema (pydantic), torch-free.

A declaration lives in a sweep spec's `methods:` block (the key is its name), or in an installed
package, as an entry point of group `turboprune.methods` whose value is a dict, a
`MethodDeclaration`, or a list of them (the module it lives in is imported to read it: keep it
free of torch). Fields:

    schedule       oneshot (prune the initial weights once to the target, train) | iterative (a
                   trunk of levels at prune.rate, branches to the targets) | control (a
                   lottery-ticket control below the levels of `base`)
    rewind         iterative: init | step (prune.rewind_epochs/iterations) | none (LR rewinding);
                   oneshot: init
    score          `module:function` returning one score per prunable weight, {name: tensor of the
                   weight's shape}; the tool keeps the top ones to the exact count, `scope`:
                   global (default) or layerwise
    masks          instead of score: `module:function` returning {name: bool tensor}, within the
                   current mask and at the target to within one weight per layer
    reads_data     the function reads ctx.batches (`batches` of them, default 1)
    reads_weights  false: the new mask depends on the old one alone (random draws); an iterative
                   method rewinding to init then trains only the levels that serve targets
    params         {key: value}: handed to the function as ctx.params; part of the level ids
    base, control  schedule control: an iterative method (built-in or declared) and reinit
                   (its masks, a fresh initialisation) or layerwise_random (random masks with
                   its per-layer counts), as imp_reinit and imp_layerwise_random are for imp

Its name, params, function and code enter its levels' ids as a built-in criterion's settings do
(core/levels.py, `prune_step`; core/code.py for the code), so its levels are shared wherever its
settings match and retrained when its code changes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.methods import BUILTIN_METHODS, METHODS, Criterion, MethodInfo, register
from core.plugins import PluginError, is_ref

ENTRY_POINT_GROUP = "turboprune.methods"
MAX_PARAMS = 32
CONTROL_KINDS = {"reinit": ("reinit", "reinit"), "layerwise_random": ("init", "random_layerwise")}


class MethodDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    schedule: Literal["oneshot", "iterative", "control"]
    rewind: Literal["init", "step", "none"] = "init"
    score: str | None = None
    masks: str | None = None
    scope: Literal["global", "layerwise"] = "global"
    reads_data: bool = False
    batches: int = Field(1, ge=1, le=1024)
    reads_weights: bool = True
    params: dict[str, Any] = Field(default_factory=dict)
    base: str | None = None
    control: Literal["reinit", "layerwise_random"] | None = None

    @field_validator("score", "masks")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None and not is_ref(value):
            raise ValueError(f"{value!r} is not an import path of the form package.module:function")
        return value

    @field_validator("params")
    @classmethod
    def _json_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        if len(params) > MAX_PARAMS:
            raise ValueError(f"{len(params)} params; at most {MAX_PARAMS}")

        def ok(v: Any) -> bool:
            if isinstance(v, (bool, int, str)) or v is None:
                return True
            if isinstance(v, float):
                return v == v and v not in (float("inf"), float("-inf"))
            return isinstance(v, list) and all(ok(x) for x in v)

        for key, value in params.items():
            if not ok(value):
                raise ValueError(f"{key}: {value!r} is not a number, string, true/false, null or a list of them")
        return params

    @model_validator(mode="after")
    def _consistent(self) -> MethodDeclaration:
        if self.schedule == "control":
            if self.base is None or self.control is None:
                raise ValueError(
                    "a control needs base (an iterative method) and control (reinit or layerwise_random)"
                )
            extra = [k for k in ("score", "masks") if getattr(self, k) is not None] + (
                ["params"] if self.params else []
            )
            if extra:
                raise ValueError(f"a control prunes with its base's masks: {', '.join(extra)} not allowed")
            return self
        if self.base is not None or self.control is not None:
            raise ValueError("base and control are for schedule: control")
        if (self.score is None) == (self.masks is None):
            raise ValueError("give exactly one of score (a function of scores) or masks (a function of masks)")
        if self.schedule == "oneshot" and self.rewind != "init":
            raise ValueError("a oneshot method prunes the initial weights and trains them: rewind must be init")
        return self

    def step_block(self) -> dict[str, Any]:
        """What its pruning steps hold (and hash) besides name, density and rewind."""
        out: dict[str, Any] = {
            "returns": "scores" if self.score is not None else "masks",
            "fn": self.score or self.masks,
            "params": dict(self.params),
            "reads_data": self.reads_data,
            "reads_weights": self.reads_weights,
        }
        if self.score is not None:
            out["scope"] = self.scope
        if self.reads_data:
            out["batches"] = self.batches
        return out

    def method_info(self) -> tuple[MethodInfo, Criterion | None]:
        if self.schedule == "control":
            assert self.control is not None
            rewind, criterion = CONTROL_KINDS[self.control]
            return MethodInfo(self.name, "control", rewind, criterion, base=self.base), None  # type: ignore[arg-type]
        crit = Criterion(self.name, self.reads_data, reads_weights=self.reads_weights, plugin=self.step_block())
        return MethodInfo(self.name, self.schedule, self.rewind, self.name), crit


def declaration(data: Any, name: str | None = None) -> MethodDeclaration:
    """A declaration from a dict (or one already made); `name`: the spec's key, which the dict may
    leave out."""
    if isinstance(data, MethodDeclaration):
        data = data.model_dump()
    if not isinstance(data, dict):
        raise ValueError(f"a method declaration is a mapping, not {type(data).__name__}")
    if name is not None:
        if data.get("name", name) != name:
            raise ValueError(f"name {data['name']!r} is not its key {name!r}")
        data = {**data, "name": name}
    return MethodDeclaration.model_validate(data)


def register_declared(decls: list[MethodDeclaration]) -> None:
    """Make declared methods known to the planner (core.methods.METHODS); a control's base must
    be an iterative method, built in or declared here."""
    for d in decls:
        info, crit = d.method_info()
        register(info, crit)
    for d in decls:
        if d.schedule == "control":
            base = METHODS.get(str(d.base))
            if base is None or base.schedule != "iterative":
                what = "not iterative" if base is not None else "unknown"
                raise ValueError(f"{d.name}: base {d.base!r} is {what}; a control needs an iterative method")


def spec_methods(block: Any) -> list[MethodDeclaration]:
    """A spec's `methods:` block, {name: declaration}, validated (ValueError naming the method)."""
    if not isinstance(block, dict):
        raise ValueError("methods: a mapping of method names to declarations")
    out = []
    for name, data in block.items():
        try:
            out.append(declaration(data, str(name)))
        except ValidationError as exc:
            raise ValueError(f"methods.{name}: {_errors(exc)}") from None
        except ValueError as exc:
            raise ValueError(f"methods.{name}: {exc}") from None
    return out


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; known: {', '.join(MethodDeclaration.model_fields)}"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def entry_point_methods() -> list[MethodDeclaration]:
    """The methods installed packages publish (entry point group `turboprune.methods`)."""
    from importlib.metadata import entry_points  # importlib.metadata (0.025 s): only when packages are asked

    out: list[MethodDeclaration] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        where = f"entry point {ep.name} = {ep.value}" + (f" of {dist.name}" if dist is not None else "")
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin package names itself, nothing more
            raise PluginError(f"{where}: cannot load it: {type(exc).__name__}: {exc}") from None
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        for item in items:
            try:
                d = declaration(item)
            except ValidationError as exc:
                raise PluginError(f"{where}: {_errors(exc)}") from None
            except ValueError as exc:
                raise PluginError(f"{where}: {exc}") from None
            if d.name in BUILTIN_METHODS:
                raise PluginError(f"{where}: {d.name!r} is a built-in method's name")
            if not isinstance(obj, (list, tuple)) and d.name != ep.name:
                raise PluginError(f"{where}: declares {d.name!r}, not {ep.name!r} (name them alike)")
            out.append(d)
    return out


def register_entry_points() -> None:
    """Register the installed packages' methods, leaving a method a spec declared as it is."""
    decls = [d for d in entry_point_methods() if d.name not in METHODS]
    register_declared(decls)
