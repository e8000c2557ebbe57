"""Streaming merge: recall_core's export against mergekit-yaml on the same merge, side by side.

    .venv/bin/python bench/bench_merge.py [--runs 3] [--cold] [--blocks 16] [--keep-outputs]

What it does (everything under bench/_work/merge/, git-ignored; the models are reused when present):

1. Writes three Llama-architecture models with random weights, stored in bfloat16 as sharded
   safetensors (~200 MB shards + index), config.json and a character tokenizer: ~252 M parameters,
   ~505 MB each. The three share a random "base" and drift from it more with depth, like fine-tunes.
2. A RECALL schedule that differs per block (``recall_schedule`` on a synthetic similarity that falls
   with depth, tau = 0.05), a MergePlan (output dtype float32) and the mergekit YAML that
   ``recall_core.mergekit_yaml`` exports for it.
3. Alternately, ``--runs`` times each (after one untimed warm-up run of each):
   (a) ``python -m recall_core merge --plan plan.json --out DIR --shard-size 500MB --quiet``
       (a complete export: shards + index, config, tokenizer, card, plan, YAML);
   (b) ``mergekit-yaml mergekit.yaml DIR --copy-tokenizer --out-shard-size 500M`` (default options
       otherwise; mergekit counts that size in bytes despite its --help: 500 MB shards, as in (a)).
   Wall time and peak RSS of each child process; medians.
4. Every output tensor compared (both outputs opened lazily, one tensor at a time, in float32).
5. Effective bandwidth of recall_core's merge (input tensor bytes read + output bytes written, per
   second) against plain copies that read and write every input byte: ``cp -r`` of the three input
   folders (in-kernel copy_file_range) and ``dd bs=16M`` of each shard (through a user-space buffer,
   like any program that transforms the bytes); medians of the same number of runs.

The page cache is warm for every tool alike (inputs read once before the runs, outputs deleted and
``sync``ed before each run, untimed) unless ``--cold``: then the page cache is dropped before every
timed run (root only).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (REPO_ROOT, WORK_DIR, Row, add_priority_argument, cpu_pressure, drop_page_cache,  # noqa: E402
                    fmt_bytes, format_table, log, machine_info, machine_line, median, offline_env, raise_priority,
                    read_files, remove, run_measured, save_results, set_offline)

MERGE_DIR = WORK_DIR / "merge"
MODEL_NAMES = ("alpha", "beta", "gamma")  # gamma is the reference
INPUT_SHARD_BYTES = 200 * 10**6
OUT_SHARD = "500MB"  # recall_core --shard-size (decimal bytes)
# mergekit --out-shard-size: its --help says "parameters", but mergekit 0.1.5's TensorWriter compares
# numel * element_size, i.e. bytes: "500M" gives 500 MB shards, the same as recall_core's 500MB.
MK_OUT_SHARD = "500M"
TOLERANCE = 1e-5


# ---------------------------------------------------------------- inputs

def model_config(blocks: int):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=blocks, num_attention_heads=16,
                       num_key_value_heads=8, vocab_size=32000, max_position_embeddings=2048,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def write_models(blocks: int, seed: int = 0) -> list[Path]:
    """Write (or reuse) the three input models; returns their folders."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from recall_core.layers import classify, layout_for
    from recall_core.toy import make_char_tokenizer

    config = model_config(blocks)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = torch.bfloat16
    stamp = {"version": 1, "blocks": blocks, "seed": seed, "dtype": "bfloat16", "config": config.to_dict()}
    stamp.pop("config")  # the config's own dict carries volatile fields (versions); blocks + seed fix it
    folders = [MERGE_DIR / "models" / name for name in MODEL_NAMES]
    if all((f / "bench_stamp.json").is_file() and json.loads((f / "bench_stamp.json").read_text()) == stamp
           for f in folders):
        log(f"reusing the input models in {folders[0].parent}")
        for folder in folders:
            config.save_pretrained(folder)
        return folders

    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in LlamaForCausalLM(config).state_dict().items()}
    layout = layout_for("llama")
    tokenizer = make_char_tokenizer()
    started = time.perf_counter()
    for m, folder in enumerate(folders):
        remove(folder)
        folder.mkdir(parents=True)
        shards, current, size = [], {}, 0
        for t_index, (name, shape) in enumerate(shapes.items()):
            # base: seeded by the tensor; each model adds noise that grows with depth (a "fine-tune")
            base_gen = torch.Generator().manual_seed(seed * 100_003 + t_index)
            if len(shape) == 1:  # norms: around 1
                tensor = 1.0 + 0.02 * torch.randn(shape, generator=base_gen)
            else:
                tensor = torch.randn(shape, generator=base_gen).mul_(0.02)
            part = classify(name, layout)
            depth = {"embed": 0.0, "head": 1.0}.get(part, (part + 1) / (blocks + 1) if isinstance(part, int) else 1.0)
            noise_gen = torch.Generator().manual_seed(seed * 100_003 + t_index + 7_919 * (m + 1))
            tensor.add_(torch.randn(shape, generator=noise_gen), alpha=0.02 * (0.05 + 0.5 * depth))
            tensor = tensor.to(torch.bfloat16)
            nbytes = tensor.numel() * 2
            if current and size + nbytes > INPUT_SHARD_BYTES:
                shards.append(current)
                current, size = {}, 0
            current[name] = tensor
            size += nbytes
        shards.append(current)
        weight_map, total = {}, 0
        for i, shard in enumerate(shards, 1):
            file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / file), metadata={"format": "pt"})
            for name, tensor in shard.items():
                weight_map[name] = file
                total += tensor.numel() * 2
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "bench_stamp.json").write_text(json.dumps(stamp))
        log(f"wrote {folder} ({fmt_bytes(total)} in {len(shards)} shards, {time.perf_counter() - started:.0f} s)")
    return folders


def make_plan(folders: list[Path], blocks: int):
    """A RECALL plan whose schedule differs per block, saved with its mergekit YAML."""
    import numpy as np

    from recall_core.mergekit_yaml import to_mergekit_yaml
    from recall_core.models import ModelSpec
    from recall_core.plan import MergePlan, save_plan
    from recall_core.schedule import recall_schedule

    depth = np.linspace(0.0, 1.0, blocks + 1)
    # similarity to the reference (gamma) per hidden-state index: near 1 at the embeddings, falling with depth
    similarity = np.stack([1.0 - 0.30 * depth ** 1.5, 1.0 - 0.15 * depth, np.ones_like(depth)])
    schedule = recall_schedule(similarity, list(MODEL_NAMES), temperature=0.05)
    specs = [ModelSpec(name, str(folder), "reference" if name == MODEL_NAMES[-1] else "expert")
             for name, folder in zip(MODEL_NAMES, folders)]
    plan = MergePlan(models=specs, method="recall", reference=MODEL_NAMES[-1], schedule=schedule,
                     analysis={"note": "bench_merge.py: synthetic similarity, tau=0.05"}, dtype="float32")
    plan_path = save_plan(plan, MERGE_DIR / "plan.json")
    yaml_path = MERGE_DIR / "mergekit.yaml"
    yaml_path.write_text(to_mergekit_yaml(plan), encoding="utf-8")
    return plan, schedule, plan_path, yaml_path


# ---------------------------------------------------------------- the runs

def recall_command(plan_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "recall_core", "merge", "--plan", str(plan_path), "--out", str(out),
            "--shard-size", OUT_SHARD, "--quiet"]


def mergekit_command(yaml_path: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).with_name("mergekit-yaml")
    return [str(exe if exe.exists() else shutil.which("mergekit-yaml")), str(yaml_path), str(out),
            "--copy-tokenizer", "--out-shard-size", MK_OUT_SHARD]


def prepare(out: Path, cold: bool, inputs: list[Path]) -> None:
    """Untimed: remove the previous output, flush dirty pages, set the page cache state."""
    remove(out)
    os.sync()
    if cold:
        drop_page_cache()
    else:
        read_files(inputs)


def compare_outputs(a: Path, b: Path) -> dict:
    """Every tensor of two model folders, one at a time in float32: names, shapes, dtypes, max |a - b|."""
    import torch

    from recall_core.checkpoint import open_checkpoint

    ca, cb = open_checkpoint(a), open_checkpoint(b)
    names_a, names_b = set(ca.names), set(cb.names)
    result = {"tensors": len(names_a), "only_project": sorted(names_a - names_b)[:5],
              "only_reference": sorted(names_b - names_a)[:5], "shape_mismatch": [], "dtype_mismatch": [],
              "max_abs_diff": 0.0, "worst": None, "max_abs_value": 0.0}
    for name in sorted(names_a & names_b):
        if ca.shapes[name] != cb.shapes[name]:
            result["shape_mismatch"].append(name)
            continue
        if ca.dtypes[name] != cb.dtypes[name]:
            result["dtype_mismatch"].append(f"{name}: {ca.dtypes[name]} vs {cb.dtypes[name]}")
        x, y = ca.get(name).to(torch.float32), cb.get(name).to(torch.float32)
        diff = (x - y).abs().max().item() if x.numel() else 0.0
        result["max_abs_value"] = max(result["max_abs_value"], x.abs().max().item() if x.numel() else 0.0)
        if diff > result["max_abs_diff"] or result["worst"] is None:
            result["max_abs_diff"], result["worst"] = max(diff, result["max_abs_diff"]), name
        del x, y
    ca.close()
    cb.close()
    files_a = {p.name for p in a.iterdir()}
    files_b = {p.name for p in b.iterdir()}
    result["files_project"], result["files_reference"] = sorted(files_a), sorted(files_b)
    result["ok"] = (not result["only_project"] and not result["only_reference"] and not result["shape_mismatch"]
                    and not result["dtype_mismatch"] and result["max_abs_diff"] <= TOLERANCE)
    return result


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each tool (medians); default 3")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each tool first; default 1")
    parser.add_argument("--blocks", type=int, default=16, help="blocks per model (16: ~252 M params, ~505 MB)")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every timed run (root)")
    parser.add_argument("--only", choices=("recall", "mergekit"), help="run one tool only (profiling)")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the merged folders under bench/_work/merge")
    add_priority_argument(parser)
    args = parser.parse_args(argv)
    args.nice = raise_priority(args.nice)
    set_offline()
    started = time.perf_counter()
    MERGE_DIR.mkdir(parents=True, exist_ok=True)
    if args.cold and not drop_page_cache():
        log("--cold: cannot drop the page cache here (needs root); running warm")
        args.cold = False

    folders = write_models(args.blocks)
    load_before = cpu_pressure()
    plan, schedule, plan_path, yaml_path = make_plan(folders, args.blocks)
    inputs = [f for folder in folders for f in weight_files(folder)]
    input_file_bytes = sum(f.stat().st_size for f in inputs)

    from recall_core.checkpoint import open_checkpoint

    ckpts = [open_checkpoint(f) for f in folders]
    tensor_bytes_in = sum(c.nbytes(n) for c in ckpts for n in c.names)  # every model has weight > 0 everywhere
    n_params = sum(math.prod(shape) for shape in ckpts[0].shapes.values())
    bytes_out = 4 * n_params
    spread = schedule.weights.max(axis=1) - schedule.weights.min(axis=1)
    log(f"inputs: 3 x {n_params / 1e6:.0f} M params, bfloat16, {fmt_bytes(input_file_bytes)} of shards; "
        f"schedule rows differ (reference weight {schedule.weights[1, -1]:.3f} at block_0 -> "
        f"{schedule.weights[-2, -1]:.3f} at block_{args.blocks - 1}; row spread {spread.min():.3f}..{spread.max():.3f})")

    env = offline_env()
    out_recall, out_mk = MERGE_DIR / "out_recall", MERGE_DIR / "out_mergekit"
    tools = {
        "recall": lambda: run_measured(recall_command(plan_path, out_recall), env=env, cwd=REPO_ROOT),
        "mergekit": lambda: run_measured(mergekit_command(yaml_path, out_mk), env=env, cwd=MERGE_DIR),
    }
    outs = {"recall": out_recall, "mergekit": out_mk}
    order = [args.only] if args.only else ["recall", "mergekit"]
    results = {t: [] for t in order}
    for i in range(args.warmup + args.runs):
        timed = i >= args.warmup
        for tool in (order if i % 2 == 0 else order[::-1]):  # alternate who goes first
            prepare(outs[tool], args.cold, inputs)
            m = tools[tool]().check()
            log(f"{'run' if timed else 'warm-up'} {i - args.warmup + 1 if timed else i + 1} {tool:8s}: "
                f"{m.wall_s:6.2f} s wall, {m.user_s + m.system_s:6.2f} s CPU, peak RSS {fmt_bytes(m.peak_rss)} "
                f"(tree {fmt_bytes(m.peak_tree_rss)})")
            if timed:
                results[tool].append(m)

    # startup cost of the recall_core CLI (imports only), to separate it from the merge itself
    startup_runs = [run_measured([sys.executable, "-c", "import recall_core.cli.merge_cmd, recall_core.export, "
                                  "recall_core.merge, recall_core.mergekit_yaml, recall_core.card"], env=env,
                                 cwd=REPO_ROOT).check() for _ in range(3)]
    startup = [m.wall_s for m in startup_runs]
    startup_rss = median(m.peak_rss for m in startup_runs)

    # plain copies of the same input bytes, each reads and writes every input shard:
    # cp (in-kernel copy_file_range, no user-space buffer) and dd (read + write through a 16 MiB buffer)
    copy_dir = MERGE_DIR / "copy"
    dd_script = "; ".join(f"dd if='{f}' of='{copy_dir}/{i}.bin' bs=16M status=none" for i, f in enumerate(inputs))
    copies = {"cp": [], "dd": []}
    for _ in range(args.runs):
        for tool, command in (("cp", ["cp", "-r", *map(str, folders), str(copy_dir)]), ("dd", ["sh", "-c", dd_script])):
            prepare(copy_dir, args.cold, inputs)
            copy_dir.mkdir()
            copies[tool].append(run_measured(command).check().wall_s)
    remove(copy_dir)

    comparison = None
    if not args.only:
        comparison = compare_outputs(out_recall, out_mk)
        bytes_out = sum(f.stat().st_size for f in weight_files(out_recall))

    rows = []
    med = {t: {"wall": median(m.wall_s for m in ms), "rss": median(m.peak_rss for m in ms),
               "tree": median(m.peak_tree_rss for m in ms), "cpu": median(m.user_s + m.system_s for m in ms)}
           for t, ms in results.items()}
    ref = med.get("mergekit", {})
    proj = med.get("recall", {})
    if proj:
        rows.append(Row("wall time (median)", proj["wall"], ref.get("wall"), "s", 0.5))
        rows.append(Row("peak RSS (median, kernel)", proj["rss"], ref.get("rss"), "B", 1.0))
        rows.append(Row("peak RSS (median, polled tree)", proj["tree"], ref.get("tree"), "B"))
        rows.append(Row("CPU time user+sys (median)", proj["cpu"], ref.get("cpu"), "s"))
        moved = tensor_bytes_in + bytes_out
        merge_only = max(proj["wall"] - median(startup), 1e-9)
        bw_cp = 2 * input_file_bytes / median(copies["cp"])
        bw_dd = 2 * input_file_bytes / median(copies["dd"])
        rows.append(Row("bandwidth (read+written)/wall vs cp", moved / proj["wall"], bw_cp, "B/s",
                        higher_is_better=True))
        rows.append(Row("same, minus CLI start-up vs cp", moved / merge_only, bw_cp, "B/s", higher_is_better=True))
        rows.append(Row("same, minus CLI start-up vs dd", moved / merge_only, bw_dd, "B/s", higher_is_better=True))
    if ref and not proj:
        rows.append(Row("mergekit wall time (median)", ref["wall"], None, "s"))

    print()
    print(f"Streaming merge, 3 Llama models x {n_params / 1e6:.0f} M params (bfloat16 in, float32 out), "
          f"{args.runs} runs each, medians, page cache {'cold' if args.cold else 'warm'}")
    print(f"machine: {machine_line()}; nice {args.nice}; "
          f"other load: before {load_before}, after {cpu_pressure()}")
    print(format_table(rows, "recall_core", "mergekit / copy"))
    print()
    print(f"bytes: read {fmt_bytes(tensor_bytes_in)} of input tensors, wrote {fmt_bytes(bytes_out)}; "
          f"cp / dd move {fmt_bytes(2 * input_file_bytes)} in {median(copies['cp']):.2f} / {median(copies['dd']):.2f} s; "
          f"recall_core CLI start-up (imports only) {median(startup):.2f} s, peak RSS {fmt_bytes(startup_rss)}")
    if comparison is not None:
        verdict = "OK" if comparison["ok"] else "MISMATCH"
        print(f"tensors: {comparison['tensors']} compared, max |recall_core - mergekit| = "
              f"{comparison['max_abs_diff']:.3g} (at {comparison['worst']}; largest |value| "
              f"{comparison['max_abs_value']:.3g}); tolerance {TOLERANCE:g}: {verdict}")
        for key in ("only_project", "only_reference", "shape_mismatch", "dtype_mismatch"):
            if comparison[key]:
                print(f"  {key}: {comparison[key]}")
        print(f"files: recall_core {comparison['files_project']}\n       mergekit    {comparison['files_reference']}")
    print(f"whole benchmark: {time.perf_counter() - started:.0f} s")

    save_results("merge_results_cold" if args.cold else "merge_results", {
        "rows": rows, "settings": vars(args), "machine": machine_info(), "n_params": n_params,
        "tensor_bytes_in": tensor_bytes_in, "bytes_out": bytes_out, "input_file_bytes": input_file_bytes,
        "copy_s": copies, "startup_s": startup, "startup_peak_rss": startup_rss, "comparison": comparison,
        "runs": {t: [{k: getattr(m, k) for k in ("wall_s", "peak_rss", "peak_tree_rss", "user_s", "system_s")}
                     for m in ms] for t, ms in results.items()},
        "commands": {"recall": recall_command(plan_path, out_recall), "mergekit": mergekit_command(yaml_path, out_mk)},
    })
    if not args.keep_outputs:
        remove(out_recall)
        remove(out_mk)
    ok = comparison is None or comparison["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
