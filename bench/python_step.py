"""The model card's own decode path, measured beside the engine: a plain greedy loop in Python onnxruntime.

Opens the prefill and step graphs of a model directory (or the graphs given with --graphs, e.g. the engine's
rewritten lean/int8 ones that bench:step names in variants[].graphs), prefills a prompt of --context tokens at
batch 1, then runs 2 warm-up steps and --steps measured ones, each feeding the last step's present.* back as
past_key_values.* (numpy arrays, as the card's loop does) and the embedding of the argmax of the last logits (or the
graph's own greedy_ids) as the next inputs_embeds. The embedding rows come from the model's table
(embed_tokens.safetensors or .npy); the prompt is random text ids, or rows replayed from --prompt-embeds. Prints one line and writes JSON: ms per step (median, p90, min), inside
session.run and in all, prefill ms, the prompt ids and the ids chosen; with --floor, the step's floor beside it.

Run it with the Python that tools/python-ort.sh provides (Debian trixie's onnxruntime; pip cannot reach PyPI here):
  "$(bash tools/python-ort.sh)" bench/python_step.py --model-dir DIR [--graphs PREFILL.onnx,STEP.onnx]
      [--context 128 | --prompt-embeds ROWS.npy] [--steps 16] [--floor FLOOR.onnx] [--threads N] [--seed 1] [--out FILE]
Sessions are opened as the engine opens them (src/asr/engine.ts baseSessionOptions): every graph optimisation, no
memory pattern; intra-op threads on every core unless --threads says otherwise, as bench:step and as the engine with
one worker (it divides the cores among its workers).
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

WARMUP_STEPS = 2
# Qwen's first special token (<|endoftext|>): prompt ids are drawn from the ordinary text tokens below it.
FIRST_SPECIAL_ID = 151643


class BenchError(Exception):
    """Bad input or a model that does not fit the contract: reported in one line."""


def pick_graph(folder, names, role):
    """Like the engine's chooseGraphs: decoder_<role>*.onnx, an int4 one first."""
    matches = sorted(n for n in names if re.match(rf"decoder_{role}.*\.onnx$", n))
    matches.sort(key=lambda n: 0 if "int4" in n else 1)
    return os.path.join(folder, matches[0]) if matches else None


def model_graphs(model_dir):
    """The prefill and step graphs in onnx/ (as published) or at the top of the model directory."""
    for folder in (os.path.join(model_dir, "onnx"), model_dir):
        if not os.path.isdir(folder):
            continue
        names = os.listdir(folder)
        prefill, step = pick_graph(folder, names, "prefill"), pick_graph(folder, names, "step")
        if prefill and step:
            return prefill, step
    raise BenchError(f"{model_dir}: expected onnx/decoder_prefill_*.onnx and onnx/decoder_step_*.onnx")


def embedding_file(model_dir):
    found = []
    for folder in (model_dir, os.path.join(model_dir, "onnx")):
        if os.path.isdir(folder):
            found += [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith((".safetensors", ".npy"))]
    found.sort(key=lambda p: 0 if re.search("embed", p, re.I) else 1)
    if not found:
        raise BenchError(f"{model_dir}: no embedding table (.safetensors or .npy) for the inputs_embeds contract")
    return found[0]


def read_safetensors_table(path):
    """Rows lookup (float32, on demand, from a memory map) and shape of the embedding table: safetensors is an 8-byte header length, a JSON
    header, then raw little-endian bytes. The tensor is picked as the engine picks it (src/asr/embeddings.ts)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    candidates = {k: t for k, t in header.items() if k != "__metadata__" and len(t["shape"]) == 2 and t["dtype"] in dtypes}
    named = [k for k in candidates if re.search("embed_tokens|embed|wte|word_embeddings", k, re.I)]
    name = named[0] if len(named) == 1 else next(iter(candidates)) if len(candidates) == 1 else None
    if name is None:
        raise BenchError(f"{path}: cannot tell which tensor is the embedding table (2-D float tensors: {', '.join(candidates) or 'none'})")
    t = candidates[name]
    table = np.memmap(path, dtype=dtypes[t["dtype"]], mode="r", offset=8 + length + t["data_offsets"][0], shape=tuple(t["shape"]))
    if t["dtype"] == "BF16":
        # bfloat16 is the upper half of a float32
        return (lambda ids: (table[ids].astype(np.uint32) << 16).view(np.float32)), table.shape
    return (lambda ids: table[ids].astype(np.float32)), table.shape


def read_table(path):
    """Rows lookup and (vocabulary, width) of the embedding table."""
    if path.endswith(".npy"):
        table = np.load(path, mmap_mode="r")
        return (lambda ids: table[ids].astype(np.float32)), table.shape
    return read_safetensors_table(path)


def kv_key(name):
    """(layer, 'key'|'value') from past_key_values.3.key / present.3.value and the like (contract.ts parseKvName)."""
    numbers = re.findall(r"\d+", name)
    markers = re.findall(r"key|value|(?<![a-z])[kv](?![a-z])", name.lower())
    if not numbers or not markers:
        return None
    return int(numbers[-1]), "key" if markers[-1].startswith("k") else "value"


NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class Decoder:
    """One decoder session and what its inputs and outputs are, read from the session (contract.ts)."""

    def __init__(self, path, options, data_folder):
        self.path = path
        self.session = open_session(path, options, data_folder)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        embeds = [i for i in inputs.values() if i.type in NUMPY_TYPES and len(i.shape) == 3]
        if len(embeds) != 1:
            raise BenchError(f"{path}: expected an inputs_embeds input (float [B, S, H]); inputs: {', '.join(inputs)}")
        self.embeds = embeds[0].name
        self.embeds_type = NUMPY_TYPES[embeds[0].type]
        self.mask = next((n for n, i in inputs.items() if i.type == "tensor(int64)" and "mask" in n.lower()), None)
        self.positions = next((n for n, i in inputs.items() if i.type == "tensor(int64)" and "pos" in n.lower()), None)
        self.position_rank = len(inputs[self.positions].shape) if self.positions else 0
        past = {kv_key(n): i for n, i in inputs.items() if len(i.shape) == 4}
        present = {kv_key(n): n for n in outputs if n not in ("logits", "greedy_ids") and kv_key(n)}
        if set(past) - set(present):
            raise BenchError(f"{path}: a past input without its present output: {sorted(set(past) - set(present))}")
        # the cache passes from graph to graph by (layer, key|value): the prefill's names may differ from the step's
        self.past = past
        self.present = present
        self.greedy = "greedy_ids" in outputs
        logits = [o for o in self.session.get_outputs() if o.type in NUMPY_TYPES and len(o.shape) in (2, 3)]
        self.logits = None if self.greedy else next((o.name for o in logits if "logit" in o.name.lower()), logits[0].name if len(logits) == 1 else None)
        if not self.greedy and not self.logits:
            raise BenchError(f"{path}: expected a logits output or greedy_ids; outputs: {', '.join(outputs)}")

    def run(self, embeds, start, past):
        """Feeds `embeds` [1, S, H] at positions start.., with the cache `past` ((layer, part) -> array) or none;
        returns the greedy id after the last position and this run's cache."""
        n = embeds.shape[1]
        feeds = {self.embeds: embeds.astype(self.embeds_type, copy=False)}
        if self.mask:
            feeds[self.mask] = np.ones((1, start + n), dtype=np.int64)
        if self.positions:
            ids = np.arange(start, start + n, dtype=np.int64)[None, :]
            feeds[self.positions] = ids if self.position_rank == 2 else np.stack([ids] * 3)
        for key, info in self.past.items():
            # a prefill graph that also takes a cache gets an empty one
            feeds[info.name] = past[key] if past else np.zeros((1, info.shape[1], 0, info.shape[3]), dtype=NUMPY_TYPES[info.type])
        fetch = ["greedy_ids" if self.greedy else self.logits] + list(self.present.values())
        out = self.session.run(fetch, feeds)
        if self.greedy:
            next_id = int(out[0][0])
        else:
            last = out[0].reshape(-1, out[0].shape[-1])[-1]
            if not np.isfinite(last).all():
                raise BenchError(f"{self.path} produced non-finite logits")
            next_id = int(np.argmax(last))
        return next_id, dict(zip(self.present, out[1:]))


class Floor:
    """The floor of a step (bench/floor.ts): the step graph's 4-bit matmuls alone, reading the same weights. Run once
    before each measured step, as bench:step does, so both see the same machine."""

    def __init__(self, path, options, data_folder):
        self.session = open_session(path, options, data_folder)
        self.feeds = {i.name: np.full((1, 1, i.shape[2]), 0.1, dtype=NUMPY_TYPES[i.type]) for i in self.session.get_inputs()}
        self.session.run(None, self.feeds)  # warm-up, not counted

    def run(self):
        t0 = time.perf_counter()
        self.session.run(None, self.feeds)
        return (time.perf_counter() - t0) * 1000


def open_session(path, options, data_folder=None):
    """A CPU session of the graph at `path`; with `data_folder`, its external data is read from there (a graph
    rewritten by the engine lives in its cache, its weights stay beside the original graph; onnxruntime 1.21 reads
    that folder only for a graph loaded from memory, 1.30 also for a file).
    Debian's onnxruntime registers ONNX's operator schemas a second time at its first session and prints a line for
    each ("Schema error: ... already registered"): harmless, dropped; anything else it prints is passed on."""
    source = path
    if data_folder:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", data_folder)
        with open(path, "rb") as f:
            source = f.read()
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BenchError(f"{path}: onnxruntime could not load it: {str(e).splitlines()[0]}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            err.seek(0)
            for line in err.read().decode(errors="replace").splitlines():
                if line.strip() and not line.startswith("Schema error:"):
                    print(line, file=sys.stderr)


def session_options(threads):
    """As src/asr/engine.ts baseSessionOptions opens the engine's sessions on the CPU."""
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # decoder shapes grow every step: a memory pattern planned for one length is useless for the next
    o.enable_mem_pattern = False
    o.log_severity_level = 3
    o.intra_op_num_threads = threads
    return o


def every_core():
    """The cores this process may run on, as Node's availableParallelism() counts them (onnxruntime's own default
    counts physical cores: 1 on this 2-core VM)."""
    return len(os.sched_getaffinity(0))


def spread(xs):
    """median, p90 and min, as bench/step.ts computes them"""
    s = sorted(xs)
    at = lambda q: s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]
    return {"median": round(at(0.5), 2), "p90": round(at(0.9), 2), "min": round(s[0], 2)}


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/python_step.py", description="A plain Python onnxruntime greedy loop over a model's decoder graphs.")
    p.add_argument("--model-dir", required=True, help="model directory: its decoder graphs and embedding table")
    p.add_argument("--graphs", help="PREFILL.onnx,STEP.onnx to run instead of the model directory's (e.g. the engine's lean/int8 graphs)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--context", type=positive, default=128, help="prompt tokens, random text ids (default 128)")
    prompt.add_argument("--prompt-embeds", help="a .npy of the prompt's rows [N, H] (e.g. what the engine fed its prefill) instead")
    p.add_argument("--steps", type=positive, default=16, help="measured steps after 2 warm-up ones (default 16)")
    p.add_argument("--floor", help="the step graph's floor graph (bench/floor.ts floorGraph's model, written to a file) to run beside each step")
    p.add_argument("--threads", type=positive, default=every_core(), help="intra-op threads (default: every core, as bench:step and the engine with one worker)")
    p.add_argument("--seed", type=int, default=1, help="seed of the prompt's token ids (default 1)")
    p.add_argument("--out", help="write the JSON report here")
    return p.parse_args(argv)


def main(argv):
    a = parse_args(argv)
    if not os.path.isdir(a.model_dir):
        raise BenchError(f"model directory {a.model_dir} does not exist")
    own_prefill, own_step = model_graphs(a.model_dir)
    if a.graphs:
        files = a.graphs.split(",")
        if len(files) != 2 or not all(os.path.isfile(f) for f in files):
            raise BenchError(f"--graphs takes two existing files PREFILL.onnx,STEP.onnx; got {a.graphs}")
        prefill_file, step_file = files
    else:
        prefill_file, step_file = own_prefill, own_step
    # Where the weights really are (a Hugging Face snapshot links them to blobs), for graphs kept elsewhere.
    data = own_step + ".data"
    data_folder = os.path.dirname(os.path.realpath(data if os.path.exists(data) else own_step))

    lookup, (vocab, hidden) = read_table(embedding_file(a.model_dir))
    if a.prompt_embeds:
        prompt, rows = None, np.load(a.prompt_embeds)
        if rows.ndim != 2 or rows.shape[1] != hidden:
            raise BenchError(f"--prompt-embeds: expected rows [N, {hidden}]; got {list(rows.shape)}")
    else:
        prompt = np.random.default_rng(a.seed).integers(0, min(vocab, FIRST_SPECIAL_ID), a.context)
        rows = lookup(prompt)
    context = rows.shape[0]

    prefill = Decoder(prefill_file, session_options(a.threads), data_folder if a.graphs else None)
    step = Decoder(step_file, session_options(a.threads), data_folder if a.graphs else None)
    if set(step.past) - set(prefill.present):
        raise BenchError(f"{step_file}: takes a cache {prefill_file} does not return: {sorted(set(step.past) - set(prefill.present))}")
    floor = Floor(a.floor, session_options(a.threads), data_folder) if a.floor else None
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    t0 = time.perf_counter()
    next_id, cache = prefill.run(rows[None], 0, None)
    prefill_ms = (time.perf_counter() - t0) * 1000
    ids = [next_id]
    step_ms, run_ms, floor_ms = [], [], []
    length = context
    for i in range(WARMUP_STEPS + a.steps):
        if floor and i >= WARMUP_STEPS:
            floor_ms.append(floor.run())
        t0 = time.perf_counter()
        embeds = lookup(np.array([ids[-1]]))[None]
        t1 = time.perf_counter()
        next_id, cache = step.run(embeds, length, cache)
        t2 = time.perf_counter()
        length += 1
        ids.append(next_id)
        if i >= WARMUP_STEPS:
            step_ms.append((t2 - t0) * 1000)
            run_ms.append((t2 - t1) * 1000)

    report = {
        "bench": "python-step",
        "startedAt": started,
        "onnxruntime": ort.__version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "modelDir": a.model_dir,
        "graphs": {"prefill": {"file": prefill_file, "greedy": prefill.greedy}, "step": {"file": step_file, "greedy": step.greedy}},
        "threads": a.threads,
        "batch": 1,
        "context": context,
        "contextMeasured": round(context + WARMUP_STEPS + (a.steps - 1) / 2, 1),
        "steps": a.steps,
        "warmupSteps": WARMUP_STEPS,
        "prefillMs": round(prefill_ms, 1),
        # a whole iteration: embedding lookup, feeds, session.run, argmax
        "stepMs": spread(step_ms),
        "runMs": spread(run_ms),
        "floor": {"file": a.floor, "ms": spread(floor_ms)} if floor else None,
        # null when the prompt's rows came from --prompt-embeds
        "promptIds": None if prompt is None else prompt.tolist(),
        # the prefill's id, then one per step (warm-up included)
        "ids": ids,
        "machine": {"cpus": os.cpu_count()},
    }
    s = report["stepMs"]
    beside = f", floor {report['floor']['ms']['median']:.1f} ms (step/floor {s['median'] / report['floor']['ms']['median']:.2f})" if floor else ""
    print(
        f"python-step onnxruntime {ort.__version__}: {os.path.basename(step_file)} batch 1, context {context}, {a.threads} threads: "
        f"step ms p50 {s['median']:.1f} p90 {s['p90']:.1f} min {s['min']:.1f}, run ms p50 {report['runMs']['median']:.1f}, "
        f"prefill {prefill_ms:.0f} ms ({prefill_ms / context:.2f} ms/token){beside}"
    )
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BenchError as e:
        print(f"bench/python_step.py: {e}", file=sys.stderr)
        sys.exit(1)
