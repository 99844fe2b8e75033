"""LoRAs per prediction on a loaded diffusers FLUX.1 pipeline, without leaking from one prediction into the next.

:class:`LoraAdapters` keeps the LoRA adapters of one pipeline's transformer (and CLIP text encoder, for the rare
LoRA that has text-encoder layers). For one prediction, :meth:`LoraAdapters.activate` loads what is not loaded
yet, activates it with the request's scales, and on the way out (success, error or cancel) disables every
adapter: with the adapters disabled peft's LoRA layers run their base layer alone, so a prediction without LoRA
gives the base model's image byte for byte. A pipeline built on the same modules (``FluxImg2ImgPipeline`` from
:func:`fluxserve.predictors.flux_dev._img2img_from`) shares the adapters; a pipeline with a transformer of its own
(go_fast's) needs a :class:`LoraAdapters` of its own.

Two ways to hold adapters:

- By default each LoRA is an adapter of its own (named after its sha256) and stays loaded for later requests, up
  to ``max_resident`` of them; the least recently used one is deleted to make room.
- With ``hotswap_max_rank`` (for compiled transformers) there are two fixed adapters, :data:`HOTSWAP_SLOTS`
  (``lora_weights`` and ``extra_lora`` of one request need two). The first LoRA in a slot is loaded after
  ``enable_lora_hotswap(target_rank=hotswap_max_rank)``, which pads the slot to that rank and turns its scalings
  into tensors; later LoRAs are copied into the slot in place (``load_lora_weights(..., hotswap=True)``), so a
  compiled graph stays valid. Scales are then written into those tensors (diffusers' ``set_adapters`` would
  replace them by floats, and compute them from the first LoRA's alpha and rank). A LoRA the slot cannot take
  in place (layers the slot lacks, another alpha pattern, text-encoder layers) reloads the slot instead, which a
  compiled transformer pays for with a recompile.

Before loading, a file is checked against the pipeline: diffusers would otherwise silently skip a LoRA with no
``transformer.`` keys (an SDXL one), and for a LoRA whose layers are wider than the model's (made for another
size) ``load_lora_weights`` widens the model's own linear layers in place (its path for FLUX Control LoRAs),
which would break every later prediction. Such files are refused with a :class:`LoraLoadError` naming the input
field, before anything is loaded; a load that fails anyway deletes whatever part of the adapter was made.

torch, diffusers and peft are imported inside functions only: importing this module imports none of them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Protocol

from fluxserve.predictors.base import summarize

logger = logging.getLogger(__name__)

#: The input fields of the LoRAs of one request, in the order :meth:`LoraAdapters.activate` takes them.
FIELDS: tuple[str, ...] = ("lora_weights", "extra_lora")
#: The input field holding each LoRA field's scale (for messages).
SCALE_FIELDS: dict[str, str] = {"lora_weights": "lora_scale", "extra_lora": "extra_lora_scale"}
#: The fixed adapter names of the hot-swap mode, one per LoRA of a request.
HOTSWAP_SLOTS: tuple[str, ...] = ("fluxserve_slot_0", "fluxserve_slot_1")
DEFAULT_MAX_RESIDENT = 8
#: The setting an operator raises when a LoRA's rank is above the hot-swap maximum.
MAX_RANK_ENV = "FLUXSERVE_LORA_MAX_RANK"

#: The pipeline components FluxLoraLoaderMixin loads LoRA layers into.
_COMPONENTS: tuple[str, ...] = ("transformer", "text_encoder")
_COMPONENT_NAMES = {"transformer": "transformer", "text_encoder": "text encoder"}
#: diffusers warns about this for every transformer-only LoRA (the text encoder has no keys in it).
_NOISE = "No LoRA keys associated to"


class LoraWeights(Protocol):
    """What :meth:`LoraAdapters.activate` needs of a LoRA file (:class:`fluxserve.lora.LoraFile` has it)."""

    @property
    def path(self) -> str | PathLike[str]: ...

    @property
    def sha256(self) -> str: ...

    @property
    def rank(self) -> int | None: ...


class LoraLoadError(ValueError):
    """LoRA weights this pipeline cannot use; ``str()`` is ``"<field>: <message>"``, ready for a prediction's error."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def adapter_name(sha256: str) -> str:
    """The adapter name of a LoRA file outside the hot-swap mode (no dots: peft keys modules by it)."""
    return f"lora_{sha256[:16]}"


@dataclass(frozen=True)
class _Fit:
    """What checking a file against the pipeline found: its rank, and whether it has text-encoder layers."""

    rank: int
    text_encoder: bool


@dataclass
class _Slot:
    """A hot-swap adapter: which LoRA it holds (None: not created) and each layer's scaling at scale 1."""

    name: str
    sha256: str | None = None
    text_encoder: bool = False
    units: list[tuple[Any, float]] = field(default_factory=list)


class LoraAdapters:
    """The LoRA adapters of one FLUX.1 pipeline (see the module docstring).

    ``max_resident``: adapters kept loaded outside the hot-swap mode (at least 2: one request may use two).
    ``hotswap_max_rank``: None, or the hot-swap mode with slots padded to this rank (LoRAs above it are refused).
    ``label`` names the model in messages ("does not fit FLUX.1's transformer").
    """

    def __init__(
        self,
        *,
        max_resident: int = DEFAULT_MAX_RESIDENT,
        hotswap_max_rank: int | None = None,
        label: str = "FLUX.1",
    ) -> None:
        if max_resident < len(FIELDS):
            raise ValueError(f"max_resident must be at least {len(FIELDS)}, not {max_resident}")
        if hotswap_max_rank is not None and hotswap_max_rank < 1:
            raise ValueError(f"hotswap_max_rank must be at least 1, not {hotswap_max_rank}")
        self.max_resident = max_resident
        self.hotswap_max_rank = hotswap_max_rank
        self.label = label
        self._resident: OrderedDict[str, str] = OrderedDict()  # sha256 -> adapter name, least recently used first
        self._slots = [_Slot(name) for name in HOTSWAP_SLOTS]
        self._transformer: weakref.ref[Any] | None = None
        self._lock = threading.Lock()

    @property
    def hotswap(self) -> bool:
        """Whether LoRAs are hot-swapped into fixed slots."""
        return self.hotswap_max_rank is not None

    @property
    def resident(self) -> list[str]:
        """The sha256 of every loaded LoRA: least recently used first, or slot by slot in the hot-swap mode."""
        if self.hotswap:
            return [slot.sha256 for slot in self._slots if slot.sha256 is not None]
        return list(self._resident)

    @contextlib.contextmanager
    def activate(
        self,
        pipe: Any,
        loras: Sequence[tuple[LoraWeights, float]],
        log: Callable[[str], None],
        *,
        fields: Sequence[str] = FIELDS,
    ) -> Iterator[None]:
        """Run the body with ``loras`` (``(file, scale)``, the n-th for ``fields[n]``) active on ``pipe``.

        Loads what is not loaded (logging ``Loaded LoRA <sha> (rank r) in 0.12 s`` or ``LoRA <sha> already
        loaded`` to ``log``) and sets the scales; on the way out, however the body ends, disables every adapter.
        With no LoRAs the body runs on the base model. :class:`LoraLoadError` (a ValueError naming the field)
        for a file the pipeline cannot use, for the same file twice, or in the hot-swap mode for a rank above
        the maximum; the pipeline is then left with no adapter active and nothing half-loaded.
        """
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("LoRAs are already active on this pipeline for another prediction")
        try:
            self._bind(pipe)
            requests = self._check_request(loras, fields)
            self._deactivate(pipe)  # whatever happened before, start from the base model
            if not requests:
                yield
                return
            try:
                names = self._load_all(pipe, requests, log)
                self._enable(pipe, names, [scale for _, scale, _ in requests])
                yield
            finally:
                self._deactivate(pipe)
        finally:
            self._lock.release()

    def clear(self, pipe: Any) -> None:
        """Delete every adapter this object loaded (the pipeline's base model stays as it was)."""
        with self._lock:
            for name in list(self._resident.values()):
                self._delete(pipe, name)
            self._resident.clear()
            for slot in self._slots:
                if slot.sha256 is not None:
                    self._delete(pipe, slot.name)
                self._reset_slot(slot)

    # --- checks ------------------------------------------------------------------------------------

    def _bind(self, pipe: Any) -> None:
        """Check ``pipe`` can load LoRAs and has the transformer this object keeps the adapters of."""
        transformer = getattr(pipe, "transformer", None)
        if transformer is None or not hasattr(pipe, "load_lora_weights"):
            raise TypeError(f"{type(pipe).__name__} cannot load LoRAs (no transformer or no LoRA loader)")
        bound = self._transformer() if self._transformer is not None else None
        if bound is transformer:
            return
        if bound is not None:
            raise RuntimeError("this LoraAdapters keeps the adapters of another pipeline's transformer")
        # First use, or the pipeline it served is gone (reloaded): nothing of the old bookkeeping applies.
        self._resident.clear()
        for slot in self._slots:
            self._reset_slot(slot)
        self._transformer = weakref.ref(transformer)

    def _check_request(
        self, loras: Sequence[tuple[LoraWeights, float]], fields: Sequence[str]
    ) -> list[tuple[LoraWeights, float, str]]:
        most = min(len(fields), len(HOTSWAP_SLOTS)) if self.hotswap else len(fields)
        if len(loras) > most:
            raise ValueError(f"at most {most} LoRAs at once ({', '.join(fields[:most])}), not {len(loras)}")
        seen: dict[str, str] = {}
        requests = []
        for (lora, scale), name in zip(loras, fields, strict=False):
            if lora.sha256 in seen:
                first = seen[lora.sha256]
                raise LoraLoadError(
                    name,
                    f"is the same LoRA as {first} (sha256 {lora.sha256[:12]}); pass it once and set "
                    f"{SCALE_FIELDS.get(first, 'its scale')} instead",
                )
            seen[lora.sha256] = name
            if lora.rank is not None:
                self._check_rank(lora.rank, name)
            requests.append((lora, float(scale), name))
        return requests

    def _check_rank(self, rank: int, field: str) -> None:
        if self.hotswap_max_rank is not None and rank > self.hotswap_max_rank:
            raise LoraLoadError(
                field, f"rank {rank} is above the hot-swap maximum {self.hotswap_max_rank} ({MAX_RANK_ENV})"
            )

    def _inspect(self, pipe: Any, lora: LoraWeights, field: str) -> _Fit:
        """Read the file as diffusers will and check every layer against the pipeline, without loading it.

        Refuses: no ``transformer.`` keys (a LoRA for another model), layers the model does not have, layers of
        another size, keys that are not LoRA weights (they would overwrite the model's own weights, as FLUX
        Control LoRAs' norms do). Other components' keys are ignored, as diffusers ignores them.
        """
        from diffusers.utils.state_dict_utils import (
            convert_state_dict_to_diffusers,
            convert_state_dict_to_peft,
            convert_unet_state_dict_to_peft,
        )

        unfit = f"does not fit {self.label}'s transformer"
        try:
            with _quiet_diffusers():
                state_dict, _alphas = pipe.lora_state_dict(str(lora.path), return_alphas=True)
        except Exception as exc:
            raise LoraLoadError(field, f"{unfit}: diffusers cannot read it as a FLUX LoRA ({summarize(exc)})") from exc

        parts: dict[str, dict[str, Any]] = {name: {} for name in _COMPONENTS}
        others: list[str] = []
        for key, value in state_dict.items():
            component, dot, rest = key.partition(".")
            if dot and component in parts:
                parts[component][rest] = value
            else:
                others.append(key)
        transformer_sd = parts["transformer"]
        if not transformer_sd:
            shown = ", ".join(others[:2]) + (", …" if len(others) > 2 else "")
            raise LoraLoadError(
                field,
                f"{unfit}: none of its {len(state_dict)} tensors is for it (it has {shown or 'nothing'}); "
                "is it a LoRA for another model, such as SDXL?",
            )
        if "lora_A" not in next(iter(transformer_sd)):  # as PeftAdapterMixin.load_lora_adapter does
            transformer_sd = convert_unet_state_dict_to_peft(transformer_sd)
        problems: list[str] = []
        rank = _check_layers(pipe.transformer, transformer_sd, problems)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise LoraLoadError(field, f"{unfit}: {problems[0]}{more}")

        text_encoder = getattr(pipe, "text_encoder", None)
        text_sd = parts["text_encoder"]
        if text_sd and text_encoder is not None:
            # As diffusers.loaders.lora_base._load_lora_into_text_encoder converts them.
            text_sd = convert_state_dict_to_peft(convert_state_dict_to_diffusers(text_sd))
            if not hasattr(text_encoder, "text_model"):
                text_sd = {k.removeprefix("text_model."): v for k, v in text_sd.items()}
            rank = max(rank, _check_layers(text_encoder, text_sd, problems))
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise LoraLoadError(field, f"does not fit {self.label}'s text encoder: {problems[0]}{more}")
        self._check_rank(rank, field)
        return _Fit(rank=rank, text_encoder=bool(text_sd) and text_encoder is not None)

    # --- loading -----------------------------------------------------------------------------------

    def _load_all(
        self, pipe: Any, requests: list[tuple[LoraWeights, float, str]], log: Callable[[str], None]
    ) -> list[str]:
        """Make every requested LoRA resident; the adapter names, in request order."""
        if self.hotswap:
            return self._load_into_slots(pipe, requests, log)
        names = []
        needed = {lora.sha256 for lora, _, _ in requests}
        for lora, _, field_name in requests:
            name = adapter_name(lora.sha256)
            if lora.sha256 in self._resident and _has_adapter(pipe, name):
                self._resident.move_to_end(lora.sha256)
                log(f"LoRA {lora.sha256[:12]} already loaded")
            else:
                self._resident.pop(lora.sha256, None)
                fit = self._inspect(pipe, lora, field_name)
                self._evict(pipe, keep=needed)
                start = time.perf_counter()
                self._load(pipe, lora, name, field_name, fit)
                self._resident[lora.sha256] = name
                log(f"Loaded LoRA {lora.sha256[:12]} (rank {fit.rank}) in {time.perf_counter() - start:.2f} s")
            names.append(name)
        return names

    def _evict(self, pipe: Any, keep: set[str]) -> None:
        """Delete least recently used adapters (not those in ``keep``) until one more fits."""
        while len(self._resident) >= self.max_resident:
            victim = next((sha for sha in self._resident if sha not in keep), None)
            if victim is None:
                return
            name = self._resident.pop(victim)
            self._delete(pipe, name)
            logger.info("Unloaded LoRA %s (least recently used of %d)", victim[:12], self.max_resident)

    def _load(self, pipe: Any, lora: LoraWeights, name: str, field_name: str, fit: _Fit, hotswap: bool = False) -> None:
        """``load_lora_weights`` into adapter ``name``; on failure delete what was made and raise LoraLoadError."""
        try:
            with _quiet_diffusers(), warnings.catch_warnings():
                # peft's note on every adapter after the first; several adapters are what this class is for.
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                pipe.load_lora_weights(str(lora.path), adapter_name=name, hotswap=hotswap)
            if not _has_adapter(pipe, name):
                raise RuntimeError("diffusers loaded no layer of it")
        except Exception as exc:
            if not hotswap:
                self._delete(pipe, name)
            raise LoraLoadError(
                field_name, f"could not be loaded into {self.label}'s transformer: {summarize(exc)}"
            ) from exc

    def _load_into_slots(
        self, pipe: Any, requests: list[tuple[LoraWeights, float, str]], log: Callable[[str], None]
    ) -> list[str]:
        chosen: list[_Slot | None] = [
            next((s for s in self._slots if s.sha256 == lora.sha256), None) for lora, _, _ in requests
        ]
        for (lora, _, _), slot in zip(requests, chosen, strict=True):
            if slot is not None:
                log(f"LoRA {lora.sha256[:12]} already loaded")
        for i, (lora, _, field_name) in enumerate(requests):
            if chosen[i] is not None:
                continue
            free = [s for s in self._slots if s not in chosen]
            # A slot that exists takes the LoRA in place; creating the other one would change a compiled graph.
            slot = next((s for s in free if s.sha256 is not None), free[0])
            chosen[i] = slot
            fit = self._inspect(pipe, lora, field_name)
            start = time.perf_counter()
            how = self._fill_slot(pipe, slot, lora, field_name, fit)
            elapsed = time.perf_counter() - start
            log(f"Loaded LoRA {lora.sha256[:12]} (rank {fit.rank}) in {elapsed:.2f} s{how}")
        return [slot.name for slot in chosen if slot is not None]

    def _fill_slot(self, pipe: Any, slot: _Slot, lora: LoraWeights, field_name: str, fit: _Fit) -> str:
        """Put ``lora`` into ``slot``: in place when the slot exists and can take it, else (re)created.

        Returns what to add to the log line.
        """
        how = ""
        if slot.sha256 is not None:
            if not (fit.text_encoder or slot.text_encoder):
                try:
                    self._load(pipe, lora, slot.name, field_name, fit, hotswap=True)
                except LoraLoadError as exc:
                    logger.info("Hot-swapping LoRA %s failed (%s); reloading its slot", lora.sha256[:12], exc.message)
                    how = " (reloaded its slot: it does not hot-swap into the last one)"
                else:
                    slot.sha256 = lora.sha256
                    slot.units = _unit_scalings(pipe, slot.name)
                    return " (hot-swapped)"
            else:
                how = " (reloaded its slot: text-encoder layers do not hot-swap)"
            self._delete(pipe, slot.name)
            self._reset_slot(slot)
        pipe.enable_lora_hotswap(target_rank=self.hotswap_max_rank, check_compiled="ignore")
        try:
            self._load(pipe, lora, slot.name, field_name, fit)
        finally:
            _forget_hotswap_preparation(pipe)
        slot.sha256 = lora.sha256
        slot.text_encoder = fit.text_encoder
        slot.units = _unit_scalings(pipe, slot.name)
        return how

    def _reset_slot(self, slot: _Slot) -> None:
        slot.sha256 = None
        slot.text_encoder = False
        slot.units = []

    def _delete(self, pipe: Any, name: str) -> None:
        """Remove adapter ``name`` from every component, including layers a failed load left behind."""
        try:
            pipe.delete_adapters(name)
        except Exception:
            logger.debug("delete_adapters(%r) failed; removing its layers one by one", name, exc_info=True)
        for component in _components(pipe):
            for module in _lora_layers(component):
                if name in getattr(module, "lora_A", {}):
                    module.delete_adapter(name)
            config = getattr(component, "peft_config", None)
            if isinstance(config, dict):
                config.pop(name, None)

    # --- activation --------------------------------------------------------------------------------

    def _enable(self, pipe: Any, names: list[str], scales: list[float]) -> None:
        if not self.hotswap:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=scales)
            return
        import torch

        by_name = dict(zip(names, scales, strict=True))
        # Every existing slot stays active (an unused one at scale 0), so a compiled graph sees the same adapters.
        active = [slot.name for slot in self._slots if slot.sha256 is not None]
        for slot in self._slots:
            scale = by_name.get(slot.name, 0.0)
            for module, unit in slot.units:
                current = module.scaling[slot.name]
                if isinstance(current, torch.Tensor):
                    current.fill_(unit * scale)
                else:
                    module.scaling[slot.name] = unit * scale
        for component in _components(pipe):
            for module in _lora_layers(component):
                module.set_adapter(active)
        pipe.enable_lora()

    def _deactivate(self, pipe: Any) -> None:
        """Disable every LoRA layer of the pipeline: they run their base layer alone."""
        if any(True for component in _components(pipe) for _ in _lora_layers(component)):
            pipe.disable_lora()


def _components(pipe: Any) -> list[Any]:
    return [c for c in (getattr(pipe, name, None) for name in _COMPONENTS) if c is not None]


def _lora_layers(model: Any) -> Iterator[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            yield module


def _has_adapter(pipe: Any, name: str) -> bool:
    config = getattr(pipe.transformer, "peft_config", None)
    return isinstance(config, dict) and name in config


def _unit_scalings(pipe: Any, name: str) -> list[tuple[Any, float]]:
    """Each LoRA layer of adapter ``name`` with its scaling as loaded (alpha / rank: the scaling at scale 1)."""
    units = []
    for component in _components(pipe):
        for module in _lora_layers(component):
            scaling = getattr(module, "scaling", None)
            if isinstance(scaling, dict) and name in scaling:
                units.append((module, float(scaling[name])))
    return units


def _forget_hotswap_preparation(pipe: Any) -> None:
    """Drop a pending ``enable_lora_hotswap`` a failed load did not use, so no unrelated later load pads."""
    for component in _components(pipe):
        if getattr(component, "_prepare_lora_hotswap_kwargs", None) is not None:
            component._prepare_lora_hotswap_kwargs = None


def _check_layers(model: Any, state_dict: dict[str, Any], problems: list[str]) -> int:
    """Append what in a peft-format ``state_dict`` does not fit ``model`` to ``problems``; return the largest rank."""
    import torch

    rank = 0
    missing: list[str] = []
    for key, value in state_dict.items():
        module_path, marker, _ = key.partition(".lora_")
        if not marker:
            problems.append(f"{key} is not a LoRA weight (it would overwrite the model's own weights)")
            continue
        try:
            module = model.get_submodule(module_path)
        except AttributeError:
            if module_path not in missing:
                missing.append(module_path)
            continue
        base = getattr(module, "base_layer", module)
        shape = tuple(getattr(value, "shape", ()))
        if key.endswith((".lora_A.weight", ".lora_B.weight")) and not isinstance(base, torch.nn.Linear):
            problems.append(f"{module_path} is a {type(base).__name__} here, not a linear layer")
        elif key.endswith(".lora_A.weight"):
            if len(shape) != 2 or shape[1] != base.in_features:
                problems.append(f"{module_path} has {base.in_features} inputs, the LoRA's has {_size(shape, 1)}")
            elif shape:
                rank = max(rank, int(shape[0]))
        elif key.endswith(".lora_B.weight") and (len(shape) != 2 or shape[0] != base.out_features):
            problems.append(f"{module_path} has {base.out_features} outputs, the LoRA's has {_size(shape, 0)}")
    if missing:
        problems.insert(
            0,
            f"{len(missing)} of its layers are not in it (such as {missing[0]}); "
            "is it a LoRA for another model or model size?",
        )
    return rank


def _size(shape: tuple[int, ...], axis: int) -> str:
    return str(shape[axis]) if len(shape) > axis else f"shape {list(shape)}"


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NOISE)


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Drop diffusers' "No LoRA keys associated to CLIPTextModel" warning, logged for every FLUX LoRA."""
    loggers = [logging.getLogger(name) for name in ("diffusers.loaders.peft", "diffusers.loaders.lora_base")]
    noise = _DropNoise()
    for each in loggers:
        each.addFilter(noise)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(noise)
