"""The memory plan: how the frozen 22B base, the LoRA and the activations fit the GPU.

`choose_plan` is a pure function of the memory budget, the transformer's sizes, the largest batch the buckets
make, the LoRA rank and optimizer, and what the config fixes; it returns the fastest plan whose expected peak fits:

  1. bf16 base, no block swap; then the same with the text connectors kept in host memory (a bf16 base is
     preferred wherever it fits: quantizing the base costs quality; measured at a 48 GiB cap on an H200, bf16 with
     the connectors on host trains at 0.87 s/step against 0.81 s for INT8, bench/README.md);
  2. 1-byte base (FP8 for an FP8 checkpoint, as stored; INT8 per-channel from a bf16 checkpoint), no swap;
  3. the same with the fewest blocks swapped to host memory (evenly spread);
  4. the text connectors (2 B parameters, run once per step without gradients) kept in host memory and copied
     to the GPU for that call, again with as few blocks swapped as needed;
  5. the LoRA rank lowered (to 16, then 8), likewise.
Explicit `memory.quantization` / `memory.block_swap` values are kept as given. `memory.fp8_matmuls` on makes the
base FP8 in every candidate (an FP8 file as stored, a bf16 one quantized per tensor): its matmuls need FP8 weights.
auto turns them on where the plan picked an FP8 base anyway and the GPU has FP8 matmuls. Gradient checkpointing is whatever
the config says (block swap requires it). With checkpointing on and no block swap, the room left under the budget
keeps whole blocks' activations (`kept_blocks`: those blocks are not recomputed in backward; each saves about 1/48
of the recompute, 4.9 ms a block at 960x544x49 on an H200, for ~1.1 GiB). `plan_for_config` measures the budget (or takes the forced tier) and is
what both `ltx-lora train` and `ltx-lora doctor` call, so both show the same plan.

The peak estimate counts weights, LoRA parameters + gradients + optimizer state (LoKr / LoHa: their own parameter
counts, plus what autograd keeps of their factorised changes beyond plain LoRA's, `Workload.adapter_activation_bytes`:
derived; measured on an H200 within 0.82 GiB under (LoKr) and 0.48 GiB over (LoHa) the peak), and activations
with whole-block checkpointing: each block's input is kept (one token row per block) plus one block's working set
while it is recomputed and back-propagated. The
working-set constant is calibrated on the measured bf16 step on an H100 (960x544x49 + audio, rank 32, AdamW:
40.9 GiB, bench/results/2026-11-25_h100_train_step_960x544x49*.jsonl); bench/memory_tiers.py prints the estimate
beside the measured peak of every tier. A 1-byte base dequantised per matmul adds one layer's dequantised weight
(fp32 product, bf16 result); FP8 matmuls instead add one layer's transposed FP8 weight (the backward's,
`ltx/quantize.py`) and the FP8 copy of the widest activation or gradient (the feed-forward's 4x-wide hidden layer:
two block-input rows), estimated, not yet measured. The 24 GiB tier's plan (INT8 base, 18 blocks swapped) peaked
at 21.8 GiB allocated / 23.9 reserved against 22.0 expected, with CUDA graphs (H200, 2026-12-05).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ltx_lora.bucket_spec import batch_size_for, latent_tokens, parse_buckets
from ltx_lora.config import Config, fp8_matmuls_refusal
from ltx_lora.distributed.env import DistEnv
from ltx_lora.errors import UserError
from ltx_lora.ltx.quantize import fp8_matmul_support
from ltx_lora.ltx.sizes import TransformerSize, linear_input, lokr_factorization, ltx23_22b_config, transformer_size
from ltx_lora.ltx.text import TOKENIZER_LENGTH
from ltx_lora.runtime.base_file import BaseFile
from ltx_lora.runtime.device import pick_device
from ltx_lora.runtime.placement import spread_blocks
from ltx_lora.task import resolve_task

GIB = 2**30
WORKING_SET_ROWS = 38.0  # one block's recompute + backward, in units of one block-input row (calibrated, see above)
# a block whose activations are kept, in block-input rows: measured 1.07 GiB a block at 3,570 + 51 tokens (39 rows;
# H200, bench/results/2026-12-04_h200_graphs_selective_960x544x49.jsonl), with a margin
KEPT_BLOCK_ROWS = 42.0
KEPT_MARGIN_GIB = 2.0  # blocks are kept only with the room beyond this (allocator slack under a tight cap)
FRAGMENTATION = 1.08  # the caching allocator reserves more than it hands out (conservative: a plan must train)
TIER_GIB = {"80gb": 80, "48gb": 48, "32gb": 32, "24gb": 24}
TIER_RESERVE_GIB = 1.0  # CUDA context and a display on a forced tier's nominal size
FREE_RESERVE_GIB = 0.5  # left free of the measured free memory
# state bytes per LoRA parameter; adafactor's plain LoRA is counted exactly (`Workload.optimizer_state_bytes`), this
# bound serves LoKr / LoHa factors (a row and a column per matrix: 4 x (1/64 + 1/64) bytes on 64 x 64 factors)
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "prodigy": 16, "adafactor": 0.25}
ADAPTER_ACT_BYTES = 2  # the adapters' intermediates are bf16: the training step runs under bf16 autocast
BUILT_CHANGE_COPIES = 3  # LoHa's built change: it (for the input's gradient) and the two products it multiplies
RANK_FLOOR = (16, 8)  # ranks the plan may fall back to when nothing else fits
SWAP_SLOTS = 2
FP8_MATMUL_ROWS = 2.0  # FP8 copy of the feed-forward's hidden activation (4x wide, 1 byte), in block-input rows


@dataclass(frozen=True)
class Workload:
    """The largest batch the buckets make (video and audio tokens per batch) and the LoRA being trained."""

    video_tokens: int
    audio_tokens: int
    rank: int
    lora_per_rank: int  # LoRA parameters per unit of rank for the configured targets
    optimizer: str = "adamw"
    gradient_checkpointing: bool = True
    variant: str = "lora"  # lora.variant: lokr / loha count their own parameters and what autograd keeps of them
    target_shapes: tuple[tuple[int, int], ...] = ()  # (in, out) of the targeted linears of one block (lokr / loha)
    target_inputs: tuple[tuple[int, bool], ...] = ()  # their token rows per step, input has a gradient (`linear_input`)
    blocks: int = 0  # blocks that carry the adapters (lora.blocks; all of them by default)
    lokr_factor: int = -1
    ema_on_device: bool = False  # train.ema kept on the GPU: an fp32 shadow of every trainable parameter
    output_preservation: bool = False  # train.output_preservation: a second backward starts with every gradient held

    def optimizer_state_bytes(self, rank: int) -> float:
        """The optimizer's state for the adapters at `rank`. Adafactor on plain LoRA keeps, per matrix, a row and a
        column of second moments and its RMS (fp32): A [r, in] -> r + in + 1, B [out, r] -> out + r + 1; 0.13 bytes
        per parameter at rank 32 on 4,096-wide layers, against AdamW's 8."""
        if self.optimizer == "adafactor" and self.variant == "lora" and self.target_shapes and self.blocks:
            return 4.0 * self.blocks * sum((rank + i + 1) + (o + rank + 1) for i, o in self.target_shapes)
        return self.adapter_parameters(rank) * OPTIMIZER_BYTES.get(self.optimizer, 8)

    def adapter_parameters(self, rank: int) -> int:
        """Trainable parameters at `rank`: LoRA r * (in + out) per layer; LoHa twice that (two pairs); LoKr peft's
        factors (w1 full, out_l x in_m; w2 full, out_k x in_n, or split at rank r where r < max(out_k, in_n) / 2)."""
        if self.variant == "lora" or not self.target_shapes:
            return rank * self.lora_per_rank * (2 if self.variant == "loha" else 1)
        if self.variant == "loha":
            per_block = sum(2 * rank * (i + o) for i, o in self.target_shapes)
        else:
            per_block = 0
            for i, o in self.target_shapes:
                in_m, in_n = lokr_factorization(i, self.lokr_factor)
                out_l, out_k = lokr_factorization(o, self.lokr_factor)
                w2 = out_k * in_n if rank >= max(out_k, in_n) / 2 else rank * (out_k + in_n)
                per_block += out_l * in_m + w2
        return per_block * self.blocks

    def adapter_layer_bytes(self, i: int, o: int, tokens: int, grad: bool = True) -> int:
        """Bytes autograd keeps of one adapted layer's change (in -> out, `tokens` rows; `grad`: its input carries a
        gradient) beyond plain LoRA's at the same rank: its tokens x r product and bf16 copies of B (and of A, for
        the input's gradient), which the calibrated working set holds; the input's bf16 copy is kept alike by every
        variant. LoKr (`lora_file.kron_linear`): the tokens x (in_m * out_k) contraction between w2 and w1, and the
        factors' bf16 copies. LoHa (`lora_file.hadamard_linear`): the tokens x r^2 product and the r^2-wide factors
        where r^2 * (in + out) < in * out; elsewhere the built out x in change (kept for the input's gradient), the
        two products it multiplies and the four factors' copies. Counted on the tiny transformer with autograd's
        saved-tensor hooks (tests/test_lora_variants.py). The first block's input carries no gradient, but is counted
        as if it did, as every later block's does."""
        if not tokens:  # the layer does not run (its modality is off)
            return 0
        r, g = self.rank, int(grad)
        if self.variant == "lokr":
            in_m, in_n = lokr_factorization(i, self.lokr_factor)
            out_l, out_k = lokr_factorization(o, self.lokr_factor)
            split = r * (out_k + in_n) if r < max(out_k, in_n) / 2 else 0  # peft splits w2 into two rank-r factors
            kept = tokens * in_m * out_k + out_l * in_m + g * out_k * in_n + split
        elif r * r * (i + o) < i * o:
            kept = tokens * r * r + r * r * (o + g * i)
        else:
            kept = (BUILT_CHANGE_COPIES - 1 + g) * i * o + 2 * r * (i + o)
        return (kept - tokens * r - r * (o + g * i)) * ADAPTER_ACT_BYTES

    def _layer_bytes(self) -> list[int]:
        return [self.adapter_layer_bytes(i, o, t, g)
                for (i, o), (t, g) in zip(self.target_shapes, self.target_inputs, strict=True)]

    def adapter_block_bytes(self) -> float:
        """`adapter_layer_bytes` of one block's adapted layers (0 for plain LoRA)."""
        if self.variant == "lora" or not self.target_shapes:
            return 0.0
        return float(sum(self._layer_bytes()))

    def adapter_activation_bytes(self) -> float:
        """What LoKr / LoHa add to the activations: with gradient checkpointing one block's `adapter_block_bytes`
        alive at a time, without it every block's; backward adds one layer's gradients of the same sizes (the
        largest layer's). Derived from what autograd saves; on an H200 (2026-12-05, bench/README.md) the plan was
        0.82 GiB under LoKr's measured peak and 0.48 GiB over LoHa's, inside the plan's margin (not calibrated to
        those two points: where LoKr's extra lives is not profiled yet). Never below
        plain LoRA's: a layer narrower than the rank keeps less than LoRA would (tiny models), but the working set
        is calibrated on 4,096-wide layers, where LoRA's own share is small."""
        if self.variant == "lora" or not self.target_shapes:
            return 0.0
        layers = self._layer_bytes()
        return max(sum(layers) * (1 if self.gradient_checkpointing else self.blocks) + max(max(layers), 0), 0.0)


@dataclass(frozen=True)
class Plan:
    budget_gib: float | None  # None: no limit known (CPU)
    budget_from: str
    quantization: str  # none / fp8 / int8
    swapped_blocks: tuple[int, ...]
    blocks: int
    gradient_checkpointing: bool
    rank: int
    expected_peak_gib: float
    text_connectors_on_host: bool = False
    parts_gib: dict[str, float] = field(default_factory=dict)
    fits: bool = True
    notes: tuple[str, ...] = ()
    kept_blocks: int = 0  # blocks whose activations are kept (not recomputed), within gradient checkpointing
    fp8_matmuls: bool = False  # the FP8 base computes its matmuls in FP8 (memory.fp8_matmuls)

    def describe(self) -> str:
        weights = {"none": "bf16", "fp8": "FP8", "int8": "INT8"}[self.quantization]
        if self.fp8_matmuls:
            weights += " (FP8 matmuls)"
        swap = f"{len(self.swapped_blocks)} of {self.blocks} blocks swapped to host" if self.swapped_blocks else "no block swap"
        ckpt = "gradient checkpointing" if self.gradient_checkpointing else "no gradient checkpointing"
        if self.gradient_checkpointing and self.kept_blocks:
            ckpt = (f"gradient checkpointing on {self.blocks - self.kept_blocks} of {self.blocks} blocks" if
                    self.kept_blocks < self.blocks else "no recompute (every block's activations kept)")
        budget = f"{self.budget_gib:.1f} GiB ({self.budget_from})" if self.budget_gib is not None else self.budget_from
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.parts_gib.items())
        text = ", text connectors streamed from host" if self.text_connectors_on_host else ""
        line = f"memory plan: {weights} base, {swap}{text}, {ckpt}, LoRA rank {self.rank}; "
        if self.budget_gib is None:  # on the CPU there is no device memory to plan: no peak to claim
            line += self.budget_from
        else:
            line += f"expected peak {self.expected_peak_gib:.1f} GiB ({parts}) of budget {budget}"
        if not self.fits:
            line += " - DOES NOT FIT"
        return line + "".join(f"\n  note: {n}" for n in self.notes)


def _weight_bytes(quantization: str, fp8_coverage: float) -> float:
    """Bytes per quantizable weight: 2 in bf16, 1 quantized; an FP8 file used as stored keeps the linears it did
    not quantize in bf16 (`fp8_coverage` = the share of quantizable weights it stores as FP8)."""
    if quantization == "none":
        return 2.0
    return 2.0 - fp8_coverage if quantization == "fp8" else 1.0


def estimate(size: TransformerSize, work: Workload, quantization: str, swapped: int,
             connectors_on_host: bool = False, fp8_coverage: float = 1.0,
             fp8_matmuls: bool = False) -> dict[str, float]:
    """Expected peak device memory in GiB by part. Connectors on host: they visit the GPU at the start of a step,
    when no activations are held, so the peak is the larger of that moment and the backward pass."""
    wbytes = _weight_bytes(quantization, fp8_coverage)
    block = size.quantizable_per_block * wbytes + size.other_per_block * 2  # what one swapped block takes off
    weights = size.quantizable_per_block * wbytes * size.blocks + size.other_per_block * 2 * size.blocks \
        + size.outside_blocks * 2 - swapped * block + (min(swapped, SWAP_SLOTS) * block if swapped else 0)
    # fp32 weights + fp32 gradients + optimizer state (+ the EMA's fp32 shadow: measured +0.80 GiB at rank 32 on
    # H200, 2026-12-04, bench/results/2026-12-04_h200_lora_options_960x544x49.jsonl, which is 214M x 4 bytes)
    lora = (work.adapter_parameters(work.rank) * (4 + 4 + (4 if work.ema_on_device else 0))
            + work.optimizer_state_bytes(work.rank))
    row = (work.video_tokens * size.video_dim + work.audio_tokens * size.audio_dim) * 2
    if work.gradient_checkpointing:
        acts = row * (size.blocks + WORKING_SET_ROWS)
    else:  # every block's working set is kept
        acts = row * WORKING_SET_ROWS * size.blocks
    if fp8_matmuls:  # one transposed FP8 weight and the FP8 copy of a 4x-wide activation at a time
        acts += size.largest_linear + row * FP8_MATMUL_ROWS
    elif quantization != "none":  # one dequantised weight (fp32 product, bf16 result) at a time
        acts += size.largest_linear * 6
    acts += work.adapter_activation_bytes()
    # train.output_preservation: its two passes run after the main loss's backward has freed that graph
    # (train/step.py), so one forward's and backward's activations are held at a time as without it; but its
    # backward starts with every LoRA gradient already allocated by the main one, where the plain step's peak comes
    # before backward has allocated most of them: measured +0.81 GiB (40.82 -> 41.63, H200, 2026-12-05,
    # bench/README.md), 213.9M fp32 gradients are 0.80.
    if work.output_preservation:
        acts += work.adapter_parameters(work.rank) * 4
    text = size.text_connectors * 2
    if connectors_on_host:
        acts = max(acts, text)
        text = 0
    return {"weights": weights / GIB, "text connectors": text / GIB, "LoRA+optimizer": lora / GIB,
            "activations": acts / GIB}


def choose_plan(budget_gib: float | None, budget_from: str, size: TransformerSize, work: Workload,
                quantization: str = "auto", block_swap: int | str = "auto", fp8_checkpoint: bool = False,
                fp8_coverage: float = 1.0, fp8_matmuls: bool = False) -> Plan:
    """The fastest plan that fits `budget_gib` (see the module docstring). Pure: no device is touched.
    `fp8_checkpoint`: the file stores scaled FP8 linears (`fp8_coverage` of the quantizable weights);
    `fp8_matmuls`: the base computes in FP8, so it is FP8 in every candidate."""
    if fp8_matmuls and (why := fp8_matmuls_refusal(quantization)):
        raise UserError(why)
    coverage = fp8_coverage if fp8_checkpoint else 1.0
    if not isinstance(block_swap, str) and block_swap and not work.gradient_checkpointing:
        raise UserError("memory.block_swap needs train.gradient_checkpointing: true (backward reloads each block "
                        "while it is recomputed); turn checkpointing on or set memory.block_swap: 0.")
    one_byte = "fp8" if fp8_checkpoint else "int8"
    quants = ["fp8"] if fp8_matmuls else [quantization] if quantization != "auto" else ["none", one_byte]
    if isinstance(block_swap, str) and work.gradient_checkpointing:
        swaps = list(range(size.blocks + 1))
    else:
        swaps = [0 if isinstance(block_swap, str) else min(block_swap, size.blocks)]
    ranks = [work.rank] + [r for r in RANK_FLOOR if r < work.rank]

    def make(q: str, s: int, host: bool, rank: int, fits: bool) -> Plan:
        parts = estimate(size, replace(work, rank=rank), q, s, host, coverage, fp8_matmuls)
        peak = sum(parts.values())
        return Plan(budget_gib, budget_from, q, tuple(spread_blocks(s, size.blocks)), size.blocks,
                    work.gradient_checkpointing, rank, round(peak, 2), host,
                    {k: round(v, 2) for k, v in parts.items()}, fits, fp8_matmuls=fp8_matmuls)

    def ok(q: str, s: int, host: bool, rank: int) -> bool:
        parts = estimate(size, replace(work, rank=rank), q, s, host, coverage, fp8_matmuls)
        return budget_gib is None or sum(parts.values()) * FRAGMENTATION <= budget_gib

    if budget_gib is None:  # no limit known: the config's choices, bf16 where it left the choice
        return make(quants[0] if len(quants) == 1 else "none", swaps[0], False, work.rank, True)
    # bf16 first, with the connectors on host before a 1-byte base; bf16 only unswapped when the choice is ours: a
    # 1-byte base is faster than streaming bf16 blocks.
    candidates = [(q, s, host) for q in quants for host in (False, True) for s in swaps
                  if not (q == "none" and s and len(quants) > 1)]
    for rank in ranks:
        for q, s, host in candidates:
            if ok(q, s, host, rank):
                plan = _keep_blocks(make(q, s, host, rank, True), size, work)
                if rank != work.rank:
                    plan = replace(plan, notes=(f"LoRA rank lowered from {work.rank} to {rank} to fit; use "
                                                "smaller buckets or a bigger GPU to keep it.",))
                return plan
    smallest = make(quants[-1], swaps[-1], True, ranks[-1], False)
    return replace(smallest, notes=("even this plan is expected to exceed the budget: use smaller buckets "
                                    "(data.buckets), batch size 1, or a GPU with more memory.",))


def _keep_blocks(plan: Plan, size: TransformerSize, work: Workload) -> Plan:
    """Spend the room the plan leaves under its budget on blocks that keep their activations (no recompute)."""
    if plan.budget_gib is None or not plan.gradient_checkpointing or plan.swapped_blocks:
        return plan
    row = (work.video_tokens * size.video_dim + work.audio_tokens * size.audio_dim) * 2
    per_block = (row * KEPT_BLOCK_ROWS + work.adapter_block_bytes()) / GIB
    room = plan.budget_gib / FRAGMENTATION - plan.expected_peak_gib - KEPT_MARGIN_GIB
    kept = min(size.blocks, int(room // per_block)) if per_block > 0 and room > 0 else 0
    if kept <= 0:
        return plan
    parts = {**plan.parts_gib, "activations": round(plan.parts_gib["activations"] + kept * per_block, 2)}
    return replace(plan, kept_blocks=kept, parts_gib=parts, expected_peak_gib=round(sum(parts.values()), 2))


# ---------------------------------------------------------------------------------------------------------------
# From a config and this machine
# ---------------------------------------------------------------------------------------------------------------


def workload_for_config(cfg: Config, size: TransformerSize) -> Workload:
    """The largest batch of the config's buckets (by activation size) and the LoRA it trains. Every modality the
    task keeps in the sequence counts, a condition too (it goes through every block); an IC-LoRA reference adds its
    tokens (a video reference at 1/downscale size and (frames - 1)/temporal_scale + 1 frames, an audio reference as
    long as the clip's audio); a modality that is off adds none. Each prompt's text is TOKENIZER_LENGTH tokens (the
    connectors' padded layout), which the text cross-attentions' keys and values multiply."""
    task = resolve_task(cfg.task)
    video_tokens = audio_tokens = prompts = 0
    for b in parse_buckets(cfg.data.buckets):
        n = batch_size_for(b, batch_size=cfg.train.batch_size, token_budget=cfg.data.token_budget)
        video = b.tokens if task.video.present else 0
        for ref in task.video.find("reference"):
            video += latent_tokens(b.width // ref.downscale, b.height // ref.downscale,
                                   (b.frames - 1) // ref.temporal_scale + 1)
        steps = round(b.frames / cfg.train.fps * 25)  # 25 audio latents per second
        audio = steps * (1 + len(task.audio.find("reference"))) if task.audio.present else 0
        row = (video * size.video_dim + audio * size.audio_dim) * n
        if row > video_tokens * size.video_dim + audio_tokens * size.audio_dim:
            video_tokens, audio_tokens, prompts = video * n, audio * n, n
    targets = size.target_linears(cfg.lora.targets)
    adapted = size.blocks if cfg.lora.blocks is None else len([b for b in cfg.lora.blocks if b < size.blocks])
    return Workload(video_tokens=video_tokens, audio_tokens=audio_tokens, rank=cfg.lora.rank,
                    lora_per_rank=size.lora_elements_per_rank(cfg.lora.targets) // size.blocks * adapted,
                    optimizer=cfg.train.optimizer.value, gradient_checkpointing=cfg.train.gradient_checkpointing,
                    variant=cfg.lora.variant.value, target_shapes=tuple((i, o) for _, i, o in targets),
                    target_inputs=tuple(linear_input(name, video_tokens, audio_tokens, prompts * TOKENIZER_LENGTH)
                                        for name, _, _ in targets),
                    blocks=adapted, lokr_factor=cfg.lora.lokr_factor,
                    ema_on_device=cfg.train.ema.enabled and not cfg.train.ema.on_host,
                    output_preservation=cfg.train.output_preservation is not None)


def device_budget(device: torch.device) -> tuple[float | None, str]:
    """Free memory of the device in GiB (less a reserve, capped by a per-process memory fraction), or None on CPU."""
    if device.type != "cuda":
        return None, "CPU: no device memory limit"
    if device.index is None:  # torch's per-process fraction calls need an explicit index
        device = torch.device("cuda", torch.cuda.current_device())
    free, total = torch.cuda.mem_get_info(device)
    budget = free / GIB - FREE_RESERVE_GIB
    source = f"free on {torch.cuda.get_device_name(device)}"
    try:
        fraction = torch.cuda.get_per_process_memory_fraction(device)
    except (AttributeError, RuntimeError):
        fraction = 1.0
    if fraction < 1.0:
        cap = fraction * total / GIB - torch.cuda.memory_reserved(device) / GIB
        if cap < budget:
            budget, source = cap, f"per-process cap {fraction * total / GIB:.0f} GiB"
    return max(budget, 0.0), source


def plan_for_config(cfg: Config, device: torch.device | None = None, base: BaseFile | None = None,
                    budget: tuple[float, str] | None = None) -> Plan:
    """The plan `ltx-lora train` uses for this config on this machine (and `ltx-lora doctor` shows). `base`: the
    base file's facts when the caller has read them (read here otherwise, if the file exists); `budget`: (GiB,
    where it comes from) instead of the config's tier or the device's free memory."""
    if base is None and cfg.model.checkpoint and Path(cfg.model.checkpoint).is_file():
        base = BaseFile.read(cfg.model.checkpoint)
    coverage = 1.0
    if base is not None:
        size = transformer_size(base.architecture, base.text_connector_parameters)
        fp8 = base.is_fp8
        if fp8:
            coverage = base.fp8_coverage(size.quantizable_per_block * size.blocks)
    else:  # no checkpoint (yet): plan for the released 22B model
        fp8 = "fp8" in Path(cfg.model.checkpoint).name
        size = transformer_size(ltx23_22b_config())
    work = workload_for_config(cfg, size)
    mem = cfg.memory
    device = device or pick_device()
    if budget is None:
        budget = ((TIER_GIB[mem.plan] - TIER_RESERVE_GIB, f"memory.plan {mem.plan}") if mem.plan != "auto"
                  else device_budget(device))
    why_not = fp8_matmul_support(device)
    if mem.fp8_matmuls == "on" and why_not:
        raise UserError(f"memory.fp8_matmuls is on, but {why_not}; set memory.fp8_matmuls to auto or off.")
    plan = choose_plan(*budget, size, work, mem.quantization, mem.block_swap, fp8_checkpoint=fp8,
                       fp8_coverage=coverage, fp8_matmuls=mem.fp8_matmuls == "on")
    if mem.fp8_matmuls == "auto" and plan.quantization == "fp8":  # an FP8 base anyway: compute in FP8 where we can
        if why_not or device.type != "cuda":
            why = why_not or "not on a GPU"
            return replace(plan, notes=(*plan.notes, f"memory.fp8_matmuls auto: FP8 matmuls off ({why})."))
        plan = choose_plan(*budget, size, work, "fp8", mem.block_swap, fp8_checkpoint=fp8, fp8_coverage=coverage,
                           fp8_matmuls=True)
    return plan


def plan_for_processes(cfg: Config, device: torch.device, env: DistEnv, base: BaseFile | None = None) -> Plan:
    """The memory plan of every process (torchrun): the same on all GPUs, or a UserError.

    DDP: each GPU holds the whole model, so the one-GPU plan applies (a 1-byte base is fine; streaming blocks from
    host memory is not combined with DDP yet). FSDP: the bf16 base is sharded, so the plan is the bf16 one with
    1/N of the weights per GPU (quantized or swapped bases are not sharded yet)."""
    mem = cfg.memory
    if cfg.distributed.strategy == "fsdp":
        if mem.quantization not in ("auto", "none") or mem.block_swap not in ("auto", 0):
            raise UserError("distributed.strategy fsdp shards the bf16 base over the GPUs and does not combine with "
                            f"memory.quantization {mem.quantization} / memory.block_swap {mem.block_swap} yet; set "
                            "both to auto, or use distributed.strategy ddp.")
        if mem.fp8_matmuls == "on":
            raise UserError("distributed.strategy fsdp shards the bf16 base over the GPUs and does not combine with "
                            "memory.fp8_matmuls: on (an FP8 base) yet; set fp8_matmuls to off, or use "
                            "distributed.strategy ddp.")
        bf16 = cfg.model_copy(update={"memory": mem.model_copy(update={"quantization": "none", "block_swap": 0,
                                                                        "fp8_matmuls": "off"})})
        plan = plan_for_config(bf16, device, base=base)
        parts = {**plan.parts_gib, "weights": plan.parts_gib.get("weights", 0.0) / env.world_size}
        peak = sum(parts.values())
        plan = replace(plan, rank=cfg.lora.rank, expected_peak_gib=round(peak, 2), parts_gib=parts,
                       fits=plan.budget_gib is None or peak * FRAGMENTATION <= plan.budget_gib,
                       notes=((f"fsdp over {env.world_size} GPUs: each holds 1/{env.world_size} of the bf16 base "
                               "(plus the block being computed)"),))
    else:
        plan = plan_for_config(cfg, device, base=base)
        if plan.swapped_blocks or plan.text_connectors_on_host:
            raise UserError("the memory plan for these GPUs streams weights from host memory, which ltx-lora does "
                            "not combine with several GPUs yet; use distributed.strategy fsdp (the base is sharded "
                            "over the GPUs instead), or smaller buckets.")
    # GPUs with different free memory could plan differently: their models would then differ.
    plans = env.gather_json([plan.quantization, list(plan.swapped_blocks), plan.text_connectors_on_host, plan.rank,
                             plan.fp8_matmuls])
    if any(p != plans[0] for p in plans):
        raise UserError("the GPUs' memory plans differ (their free memory differs); set memory.plan to a tier "
                        "(80gb, 48gb, 32gb or 24gb) so that every GPU uses the same plan.")
    return plan
