"""What a workload shape kind owns, as one abstract class: a new kind is one module that subclasses it, one line in
the registry (shapes.KINDS) and one branch in the schema, and nothing else in the pipeline asks which kind it is.

A kind answers for: how its prompts are built and what of its config the schema cannot check; the loads it adds to
the experiment design, and whether it needs a server lifetime of its own (a small KV cache); how its traffic runs;
the prompt fields its measured records carry; and, in the report, how it is described and what it found.

The kind modules are imported by the measuring steps (for the traffic), so they import nothing from the report:
their findings get the report's number formats and claim rule handed in (`ReportKit`). Editing the report's wording
must not make a measurement's code input newer than its results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import polars as pl

    from ..prompts import Tokenizer

SINGLE_PREFIX = ("chat_policy", "rag_document")  # the one-shared-prefix workloads (prompts.py)


@dataclass(frozen=True)
class Shape:
    """One shape regime, as the config gives it (`params` holds the kind's own keys)."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BuildContext:
    """What every kind's prompt builder may use: the served model's tokenizer and context, and the run's seed."""

    tok: Tokenizer
    questions: Sequence[str]
    block_size: int
    seed: int
    max_model_len: int
    max_tokens: int
    vocab_size: int


@dataclass(frozen=True)
class Sessions:
    """Closed-loop sessions: each worker runs one session's turns in order, `think_s` apart; sessions interleave.
    A session is a list of (request_index, prompt) in turn order."""

    sessions: list[list[tuple[int, Any]]]
    think_s: float


@dataclass(frozen=True)
class Arrivals:
    """Open loop at the shape's own arrival times (seconds from the first request), in prompt order."""

    offsets: list[float]


# How a pass sends a kind's prompts; None: the point's own closed loop (concurrency) or open loop (rate).
Traffic = Sessions | Arrivals | None


@dataclass(frozen=True)
class ShapeEvidence:
    """What the report knows about the shapes of a run: every shape request (shape_requests.csv), the per-point
    prediction check (shape_points.csv), the off/on table's rows, the config's shapes (name -> {kind, params}), the KV
    block size, and each replayed trace's capacity curve (trace_capacity.csv)."""

    requests: pl.DataFrame
    check: pl.DataFrame
    points: pl.DataFrame
    shapes: Mapping[str, Mapping[str, Any]]
    block_size: int
    trace_curves: Mapping[str, Mapping[int, float]] = field(default_factory=dict)  # trace_capacity.csv, per regime


@dataclass(frozen=True)
class ReportKit:
    """The report's number formats and claim rule, handed to a kind's findings by shapes.findings (see the module
    docstring: the kind modules import no report code)."""

    judged: Callable[[dict[str, Any]], str]  # a row as the claim rule reads it (findings.judged)
    fmt_pct: Callable[[float | None], str]
    fmt_s: Callable[[float | None], str]
    fmt_x: Callable[[float | None], str]
    markdown_table: Callable[[pl.DataFrame, list[str]], str]


class ShapeKind(ABC):
    """One kind of workload shape. Subclasses set `name` (the schema's `kind`) and `record_fields`, and implement
    every abstract method; the defaults cover a kind that is one regime on the main server lifetimes."""

    name: ClassVar[str]
    # Prompt fields copied into each measured request's record (what the kind's findings group by).
    record_fields: ClassVar[tuple[str, ...]] = ()
    # Of those, the columns shape_requests.csv keeps for the kind (an arrival time is in the record, not the table).
    table_fields: ClassVar[tuple[str, ...]] = ()
    # The report sections (template keys of `shape_section`) this kind's findings fill; each is "" when absent.
    sections: ClassVar[tuple[str, ...]] = ()

    def expand(self, name: str, params: dict[str, Any], repo_dir: Path) -> dict[str, Shape]:
        """The regimes one config entry becomes (schema defaults already filled in `params`): one by default."""
        return {name: Shape(name, self.name, params)}

    @abstractmethod
    def check(self, shape: Shape, target: Mapping[str, Any], endpoint: bool) -> list[str]:
        """What is wrong with this shape on this target that the schema cannot see (empty: nothing); each
        message names the key and the fix. `endpoint`: the target is servers prefixbench does not start."""

    def kv_capacity(self, shape: Shape) -> int | None:
        """The KV blocks of the small-cache server lifetime this shape runs on; None: the main lifetimes."""
        return None

    def data_files(self, shape: Shape) -> list[str]:
        """Files the kind reads besides the tokenizer (a trace): declared as inputs of the rules that read them, so
        editing one reruns what was built from it."""
        return []

    @abstractmethod
    def loads(self, shape: Shape, concurrency: Sequence[int], rates: Sequence[float]) -> list[tuple[int, float]]:
        """The (concurrency, request rate) points the shape is measured at; a closed-loop point has rate 0.0, an
        open-loop one concurrency 0 (as the experiment design's points)."""

    @abstractmethod
    def build(self, shape: Shape, ctx: BuildContext) -> list[dict]:
        """The shape's prompt records, each with `request_index`, `prompt` (text or token ids),
        `prompt_len_tokens`, `block_hashes`, `prefix_group`, `prefix_len_tokens`, `question` and the kind's own
        `record_fields`; the request order is the list's."""

    @abstractmethod
    def traffic(self, prompts: Sequence[dict], request_rate: float) -> Traffic:
        """How one pass sends these prompts (at a point with this request rate; 0: closed loop)."""

    @abstractmethod
    def describe(self, params: Mapping[str, Any], kv_blocks: int | None) -> str:
        """One line of what a regime of this kind sends (`kv_blocks`: what its server reported, if known)."""

    @abstractmethod
    def findings(self, ev: ShapeEvidence, kit: ReportKit) -> dict[str, str]:
        """The kind's own report sections, keyed as `sections` (every key present; "" when the run has none)."""
