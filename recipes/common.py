"""Shared pieces of the two prepare scripts (recipes/prepare_math.py, recipes/prepare_code.py): the table entry
(``Dataset``, ``Split``), the command line and its one code path (``prepare_main``), reading a public release's
files, writing verl-format parquet.

Every prepare script writes rows with the columns verl's ``RLHFDataset`` and reward loop read:
``data_source``, ``prompt`` (chat messages), ``ability``, ``reward_model`` {``style``, ``ground_truth``} and
``extra_info`` {``split``, ``index``, ``question``}. ``extra_info.question`` is the bare question inside the prompt,
so that the GAIN pre-pass can tell the question tokens from the template's fixed part. ``extra_info.index`` is the
row's position in its file (GAIN's score file is aligned by it).

The prompt templates are constants of the family scripts and ``recipes/code_tests.py`` (one place each), and the
pre-pass scores exactly the ``prompt`` column written here, so training, scoring and evaluation all see the same
prompt. The default output folder, ``~/data/verl-gain/<dataset>``, is where the recipes read
(``recipe.data_dir`` in recipes/config/recipe.yaml).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import pickle
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DATA_ROOT = Path("~/data/verl-gain").expanduser()
READABLE_SUFFIXES = (".json", ".jsonl", ".parquet", ".json.gz", ".jsonl.gz", ".arrow")
MISSING = object()


def read_records(path: str | Path) -> list[dict]:
    """Rows of a JSON list (or ``{"data": [...]}``), JSON lines, parquet or arrow file, gzipped JSON too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass --local-path with a file of the public release")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    if name.endswith(".arrow"):
        import pyarrow as pa

        with pa.memory_map(str(path)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(source).read_all()
        return table.to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    stripped = text.lstrip()
    if name.endswith((".jsonl", ".jsonl.gz")) or (stripped.startswith("{") and "\n{" in stripped):
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            pass
    data = json.loads(text)
    if isinstance(data, dict):
        for key in ("data", "rows", "problems", "examples"):
            if isinstance(data.get(key), list):
                return data[key]
        raise ValueError(f"{path}: a JSON object without a list of rows (looked for 'data', 'rows', 'problems')")
    return list(data)


def split_files(directory: Path, split: str) -> list[Path]:
    """Files in ``directory`` (recursively) whose name starts with ``split`` (train.jsonl, test-00000-of-1.parquet)."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and path.name.lower().startswith(split) and path.name.lower().endswith(READABLE_SUFFIXES)
    )


def load_split(
    local_path: str | Path | None,
    split: str,
    hub_id: str,
    hub_config: str | None = None,
    hub_split: str | None = None,
) -> list[dict]:
    """The rows of ``split``: from ``local_path`` (a file, or a directory holding ``<split>*`` files) when given,
    else from the Hugging Face hub through ``datasets`` (``hub_id``, ``hub_config``, ``hub_split`` or ``split``)."""
    if local_path is not None:
        path = Path(local_path).expanduser()
        if path.is_dir():
            files = split_files(path, split)
            if not files:
                raise FileNotFoundError(f"no file named {split}* ({', '.join(READABLE_SUFFIXES)}) under {path}")
            return [row for file in files for row in read_records(file)]
        return read_records(path)
    try:
        import datasets

        dataset = datasets.load_dataset(hub_id, hub_config, split=hub_split or split)
    except Exception as exc:
        raise SystemExit(
            f"could not load {hub_id} ({hub_config or 'default'}, {hub_split or split}) from the Hugging Face hub "
            f"({type(exc).__name__}: {str(exc)[:200]}): download the release and pass --local-path"
        ) from None
    return [dict(row) for row in dataset]


def field(record: dict, *names: str, default: Any = MISSING) -> Any:
    """The first of ``names`` present in ``record`` (case-insensitive), e.g. AIME's ``Problem`` / ``problem``."""
    lowered = {str(key).lower(): value for key, value in record.items()}
    for name in names:
        if name.lower() in lowered and lowered[name.lower()] is not None:
            return lowered[name.lower()]
    if default is MISSING:
        raise KeyError(f"none of the fields {names} in a row with fields {sorted(record)}: is this the right file?")
    return default


def answer_text(value: Any) -> str:
    """A ground-truth answer as text: ``142.0`` -> ``142``; a list of answers (OlympiadBench, Minerva) joined."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars from parquet
        value = value.tolist()
    if isinstance(value, list | tuple):
        return ", ".join(answer_text(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if len(text) > 1 and text.startswith("$") and text.endswith("$"):  # OlympiadBench writes "$\frac{1}{2}$"
        text = text.strip("$").strip()
    return text


def user_prompt(content: str) -> list[dict]:
    """The chat messages of one prompt: a single user turn (no system prompt, as in the paper's verl setup)."""
    return [{"role": "user", "content": content}]


def verl_row(
    data_source: str,
    prompt: list[dict],
    ability: str,
    ground_truth: str,
    split: str,
    index: int,
    question: str,
    **extra: Any,
) -> dict:
    """One row in verl's RL format."""
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"split": split, "index": index, "question": question, **extra},
    }


def write_parquet(rows: Sequence[dict], path: str | Path) -> Path:
    """Write verl rows to ``path`` (parents created) and say how many."""
    import pandas as pd

    if not rows:
        raise SystemExit(f"no rows to write to {path}: check the input file and filters")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(rows)).to_parquet(path, index=False)
    print(f"wrote {len(rows)} rows to {path}")
    return path


def build_rows(
    records: Iterable[dict], split: str, make_row: Callable[[dict, str, int], dict | None], max_rows: int | None = None
) -> list[dict]:
    """``make_row(record, split, index)`` over ``records``; a ``None`` from it skips the record (index stays dense)."""
    rows: list[dict] = []
    for record in records:
        if max_rows is not None and len(rows) >= max_rows:
            break
        row = make_row(record, split, len(rows))
        if row is not None:
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Split:
    """One output file of a dataset and where its rows come from.

    ``name`` is the file (``<name>.parquet``), ``extra_info.split`` and the prefix of the files read from a
    ``--local-path`` folder; ``hub_split`` is the hub's name for it where that differs (AMC's only hub split is
    ``train``); ``path_option`` is the command-line option that gives its local file (MATH-500 has its own). An
    ``optional`` split without records is not written (DeepCoder's test split).
    """

    name: str
    data_source: str
    hub_id: str
    hub_config: str | None = None
    hub_split: str | None = None
    path_option: str = "local_path"
    optional: bool = False


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """What every row of a prepare script's table has: a help text, the splits written, the dataset's own
    command-line options (``option(...)``) and how the records of a split are read (``load_local_or_hub`` unless the
    release needs more)."""

    description: str
    splits: tuple[Split, ...]
    options: tuple[tuple[str, dict], ...] = ()
    load: Callable[[Split, argparse.Namespace], list[dict]] | None = None

    def records(self, split: Split, args: argparse.Namespace) -> list[dict]:
        return (self.load or load_local_or_hub)(split, args)


def option(flag: str, **kwargs: Any) -> tuple[str, dict]:
    """A dataset's own command-line option: ``argparse.add_argument(flag, **kwargs)``."""
    return flag, kwargs


def load_local_or_hub(split: Split, args: argparse.Namespace) -> list[dict]:
    """The records of ``split``: the file or folder of its path option when given, else the hub."""
    return load_split(getattr(args, split.path_option), split.name, split.hub_id, split.hub_config, split.hub_split)


def prepare_main(
    description: str,
    datasets: Mapping[str, Dataset],
    make_rows: Callable[[Dataset, Split, list[dict], argparse.Namespace], list[dict]],
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of a prepare script: ``DATASET [--local-path P] [--output-dir D] [--max-rows N] [options]``;
    writes ``make_rows(dataset, split, records, args)`` for every split of the dataset."""
    parser = argparse.ArgumentParser(description=description)
    subparsers = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name, dataset in datasets.items():
        summary = dataset.description.split("\n", 1)[0]
        sub = subparsers.add_parser(name, help=summary, description=dataset.description)
        sub.add_argument(
            "--local-path",
            default=None,
            help="a file of the public release (JSON, JSONL, parquet; .gz too), or a directory holding <split>* "
            "files; without it the dataset is loaded from the Hugging Face hub through `datasets`",
        )
        sub.add_argument(
            "--output-dir",
            default=str(DEFAULT_DATA_ROOT / name),
            help="where the parquet files go (default: %(default)s)",
        )
        sub.add_argument("--max-rows", type=int, default=None, help="keep only the first N rows of each split")
        for flag, kwargs in dataset.options:
            sub.add_argument(flag, **kwargs)
    args = parser.parse_args(argv)
    dataset = datasets[args.dataset]
    for split in dataset.splits:
        records = dataset.records(split, args)
        if not records and split.optional:
            continue
        write_parquet(make_rows(dataset, split, records, args), Path(args.output_dir) / f"{split.name}.parquet")
    return 0


def question_from_verl_row(record: dict, instruction: str) -> str | None:
    """The bare question of a row that is already in verl format (``extra_info.question``, or the user message
    without the task's instruction suffix); None for a row in a raw format."""
    prompt = record.get("prompt")
    if prompt is None or "reward_model" not in record:
        return None
    extra = record.get("extra_info") or {}
    if extra.get("question"):
        return str(extra["question"])
    messages = list(prompt)
    content = str(messages[-1]["content"])
    if not instruction or not content.endswith(instruction):
        return content
    head = content[: -len(instruction)]
    return head[:-1] if head.endswith(" ") else head  # the one space the template puts before the instruction


class _TextOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data only: LiveCodeBench ships its private tests as a pickled string; nothing else is allowed
    to come out of that file (a malicious pickle could otherwise run code)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only plain data is expected")


def decode_packed_json(value: Any) -> Any:
    """JSON, or LiveCodeBench's packed form of it (base64 of zlib of a pickled JSON string), decoded."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    unpacked = _TextOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
    return json.loads(unpacked) if isinstance(unpacked, str | bytes) else unpacked
