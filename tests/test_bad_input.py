"""Hostile input never hangs the host, never replaces its exception, never leaves a
run open, and never stores a secret (issue 7, items 5-8, 12, 15, 19)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exectrack
from exectrack import ErrorInfo, ExecutionTracker, Run, RunStatus
from exectrack._redact import (
    MAX_DEPTH,
    MAX_NODES,
    REDACTED,
    TRUNCATED_KEY,
    encode_metadata,
    normalize_metadata,
    redact_text,
)


@pytest.fixture(params=["async", "sync"])
def lax(request: pytest.FixtureRequest, db_url: str) -> Iterator[ExecutionTracker]:
    """A fail-open tracker (strict mode off), on both write paths."""
    t = ExecutionTracker(db_url, strict=False, durability=request.param)
    yield t
    t.close()


def only_run(t: ExecutionTracker) -> Run:
    runs = t.list_runs().runs
    assert len(runs) == 1, runs
    return runs[0]


def failures(t: ExecutionTracker, fragment: str) -> int:
    return sum(n for cause, n in t.stats().failures_by_cause.items() if fragment in cause)


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__


# -- item 5: shared and circular metadata --------------------------------------------------


def _doubly_linked(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"i": i} for i in range(n)]
    for i, node in enumerate(nodes):
        node["next"] = nodes[(i + 1) % n]
        node["prev"] = nodes[(i - 1) % n]
    return nodes[0]


def _self_twice() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["a"] = d
    d["b"] = d
    return d


def _shared_chain(depth: int) -> list[Any]:
    x: list[Any] = [1]
    for _ in range(depth):
        x = [x, x]  # 2**depth leaves when expanded
    return x


@pytest.mark.parametrize(
    "value",
    [_doubly_linked(4), _doubly_linked(50), _self_twice(), _shared_chain(60)],
    ids=["dll-4", "dll-50", "self-twice", "shared-chain-60"],
)
def test_shared_and_circular_metadata_is_cut_at_a_budget(value: Any) -> None:
    """What hung the call (120 s, 1.9 GB, 2**60 leaves) now stops at the node budget
    or at a cycle marker, and still encodes within the cap."""
    out = normalize_metadata({"v": value})
    text = encode_metadata(out)
    assert len(text.encode()) <= 16 * 1024
    assert "[cycle]" in text or out[TRUNCATED_KEY]["values"] == MAX_NODES


def test_the_depth_limit_is_exact() -> None:
    """Containers down to MAX_DEPTH levels are kept; one more level becomes a marker."""
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    out = normalize_metadata({"d": deep})  # the mapping itself is level 0
    node = out["d"]
    for _ in range(MAX_DEPTH - 2):
        node = node[0]
    assert node == [f"<list nested deeper than {MAX_DEPTH}>"]
    assert out[TRUNCATED_KEY] == {"depth": MAX_DEPTH}
    assert TRUNCATED_KEY not in normalize_metadata({"d": [[["leaf"]]]})


def test_a_tracked_call_with_circular_metadata_returns(lax: ExecutionTracker) -> None:
    """End to end: the call returns at once and the run is stored, marked."""
    meta = {"graph": _doubly_linked(4), "fan": _shared_chain(40)}

    @lax.with_run("skill")
    def work() -> int:
        exectrack.annotate(graph=_self_twice())
        return 7

    with lax.with_run("skill", metadata=meta) as run:
        run.annotate(more=_shared_chain(30))
    assert work() == 7
    runs = lax.list_runs().runs
    assert {r.status for r in runs} == {RunStatus.SUCCESS} and len(runs) == 2
    assert all(len(json.dumps(dict(r.metadata))) <= 16 * 1024 for r in runs)


def _graphs() -> st.SearchStrategy[Any]:
    """Arbitrary object graphs: containers whose children are drawn from earlier
    nodes or from later ones (so values are shared and cycles are common)."""
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=30),
        st.binary(max_size=30),
    )
    shape = st.lists(
        st.tuples(
            st.sampled_from(["dict", "list", "tuple"]),
            st.lists(st.one_of(st.integers(0, 15).map(lambda i: ("ref", i)), leaf), max_size=6),
        ),
        min_size=1,
        max_size=16,
    )

    def build(spec: list[tuple[str, list[Any]]]) -> Any:
        nodes: list[Any] = [{} if kind == "dict" else [] for kind, _ in spec]
        for node, (_kind, children) in zip(nodes, spec, strict=True):
            for k, child in enumerate(children):
                is_ref = isinstance(child, tuple)
                value = nodes[child[1] % len(nodes)] if is_ref else child
                if isinstance(node, dict):
                    node[f"k{k}"] = value
                else:
                    node.append(value)
        root = nodes[0]
        return tuple(root) if spec[0][0] == "tuple" else root

    return shape.map(build)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_graphs(), st.integers(256, 4096))
def test_normalisation_of_any_graph_is_bounded_and_never_raises(value: Any, limit: int) -> None:
    """Any nesting, sharing or cycle: normalisation visits at most MAX_NODES values
    (plus the few it was visiting when the budget ran out), never raises, and the
    result encodes as JSON within the limit."""
    from exectrack import _redact

    visits = 0
    original = _redact._normalize

    def counting(v: Any, depth: int, w: Any) -> Any:
        nonlocal visits
        visits += 1
        return original(v, depth, w)

    _redact._normalize = counting
    try:
        out = normalize_metadata({"v": value}, limit=limit)
    finally:
        _redact._normalize = original
    assert visits <= MAX_NODES + MAX_DEPTH
    text = encode_metadata(out, limit)
    assert len(text.encode()) <= limit and isinstance(json.loads(text), dict)


# -- item 6: cap first, then redact ------------------------------------------------------


def test_a_10mb_string_is_cut_before_it_is_redacted(
    lax: ExecutionTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10 MB metadata string or message reaches the redaction regex only as its
    capped prefix (plus a short look-ahead), so its cost no longer grows with its
    size; the stored values are capped and still redacted."""
    from exectrack import _redact

    seen: list[int] = []
    original = _redact.redact_text

    def measured(text: str) -> str:
        seen.append(len(text))
        return original(text)

    monkeypatch.setattr(_redact, "redact_text", measured)
    big = "token=abcdefgh " + "x" * 10_000_000
    with lax.with_run("skill", metadata={"blob": big}) as run:
        run.annotate(blob2=big)
    h = lax.start("skill")
    h.finish_error(code="boom", message=big)
    assert seen and max(seen) <= 16 * 1024 + 1024
    runs = {r.id: r for r in lax.list_runs().runs}
    assert "abcdefgh" not in json.dumps([dict(r.metadata) for r in runs.values()])
    message = runs[h.id].error_message or ""
    assert len(message) == 4096 and "abcdefgh" not in message


def test_a_secret_straddling_the_cut_is_still_redacted() -> None:
    """Redaction reads a little past the cut, so a key cut in half is not stored."""
    from exectrack._redact import clean_text

    key = "sk-" + "A" * 40
    text = "x" * 90 + " " + key
    out = clean_text(text, 100, redact=True)
    assert "AAAA" not in out and out.endswith("...[truncated]") and len(out) == 100


# -- item 7: classifiers and exception attributes that raise -----------------------------


class Nasty(Exception):
    """An exception whose HTTP-ish attributes raise when read."""

    @property
    def status_code(self) -> int:
        raise RuntimeError("status_code exploded")

    @property
    def response(self) -> Any:
        raise RuntimeError("response exploded")


class NastyCode(Exception):
    @property
    def error_code(self) -> str:
        raise RuntimeError("error_code exploded")


class NastyExit(SystemExit):
    @property  # type: ignore[override]
    def code(self) -> Any:
        raise RuntimeError("code exploded")


def _raising_hook(exc: BaseException) -> ErrorInfo | None:
    raise RuntimeError("hook exploded")


def _wrong_hook(exc: BaseException) -> ErrorInfo | None:
    return "rate_limited"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("exc", "hook", "status", "code", "cause"),
    [
        (ValueError("v"), _raising_hook, RunStatus.ERROR, "invalid_input", "hook raised"),
        (RuntimeError("r"), _wrong_hook, RunStatus.ERROR, "internal_error", "classifier hook"),
        (Nasty("n"), None, RunStatus.ERROR, "internal_error", "Nasty.status_code raised"),
        (NastyCode("c"), None, RunStatus.ERROR, "internal_error", "NastyCode.error_code raised"),
        (NastyExit(), None, RunStatus.CANCELED, "interrupted", None),
    ],
    ids=["hook-raises", "hook-returns-str", "status-code-raises", "error-code-raises", "exit"],
)
def test_a_broken_classifier_never_replaces_the_hosts_exception(
    lax: ExecutionTracker,
    exc: BaseException,
    hook: Any,
    status: RunStatus,
    code: str,
    cause: str | None,
) -> None:
    """The host sees its own exception object, the run ends, the failure is counted."""
    if hook is not None:
        lax.classifier.add_hook(hook)

    @lax.with_run("skill")
    def work() -> None:
        raise exc

    with pytest.raises(BaseException) as caught:  # noqa: PT011 - identity is checked
        work()
    assert caught.value is exc
    run = only_run(lax)
    assert (run.status, run.error_code) == (status, code)
    assert run.retryable is False and run.error_message
    if cause is not None:
        assert failures(lax, cause) == 1
    assert lax.stats().open_runs == 0


def test_finish_error_with_a_nasty_exception_still_finishes(lax: ExecutionTracker) -> None:
    """The manual API classifies the same way: no exception escapes, the run ends."""
    h = lax.start("skill")
    assert h.finish_error(Nasty("n")).applied
    assert only_run(lax).status is RunStatus.ERROR


# -- item 8: values whose __str__ raises -------------------------------------------------


def test_unprintable_values_get_a_placeholder_not_an_exception(lax: ExecutionTracker) -> None:
    """In metadata, source_ref, session_id and annotate(): a placeholder string and a
    counted failure; the call runs and the run ends."""

    @lax.with_run("skill", source_ref=Unprintable(), metadata={"x": Unprintable()})  # type: ignore[arg-type]
    def work() -> int:
        exectrack.annotate(y=Unprintable(), **{"z": [Unprintable()]})
        return 5

    assert work() == 5
    h = lax.start("skill", Unprintable(), Unprintable(), {Unprintable(): 1})  # type: ignore[arg-type, dict-item]
    h.annotate(w=Unprintable())
    assert h.finish_success(metadata={"v": Unprintable()}).applied
    runs = {r.id: r for r in lax.list_runs().runs}
    assert len(runs) == 2 and {r.status for r in runs.values()} == {RunStatus.SUCCESS}
    manual = runs[h.id]
    assert manual.source_ref == "<unprintable Unprintable>"
    assert manual.session_id == "<unprintable Unprintable>"
    assert manual.metadata["w"] == "<unprintable Unprintable>"
    assert manual.metadata["<unprintable Unprintable>"] == 1
    assert failures(lax, "unprintable") >= 6
    assert lax.stats().open_runs == 0


def test_decorating_at_import_time_with_an_unprintable_value_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """The module-level decorator fails open too; its failure is counted on the default
    tracker when that is first used."""
    monkeypatch.setenv("EXECTRACK_STRICT", "0")
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", db_url)

    @exectrack.with_run("skill", source_ref=Unprintable())  # type: ignore[arg-type]
    def work() -> int:
        return 1

    assert work() == 1
    t = exectrack.get_tracker()
    t.flush()
    assert only_run(t).source_ref == "<unprintable Unprintable>"
    assert failures(t, "unprintable") == 1


def test_a_finish_ends_the_run_locally_whatever_its_metadata(lax: ExecutionTracker) -> None:
    """Metadata that cannot be used (not a mapping, raising items) does not keep the
    run open: it ends, without that metadata, and the failure is counted."""

    class Raising(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("items exploded")

    a = lax.start("skill", metadata={"keep": 1})
    assert a.finish_success(metadata=[1, 2]).applied  # type: ignore[arg-type]
    b = lax.start("skill")
    b.annotate(**{"n": 1})
    b.update_metadata(Raising(x=1))
    assert b.finish_success(metadata=Raising(y=2)).applied
    runs = {r.id: r for r in lax.list_runs().runs}
    assert runs[a.id].status is RunStatus.SUCCESS and runs[a.id].metadata == {"keep": 1}
    assert runs[b.id].status is RunStatus.SUCCESS
    assert lax.stats().open_runs == 0 and failures(lax, "metadata") >= 2


# -- item 12: the secret names of clouds and providers -----------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "wJalrXUtnFEMI"),
        ("AWS_SESSION_TOKEN=IQoJb3JpZ2luX2VjEJr", "IQoJb3JpZ2luX2VjEJr"),
        ("AccountName=acct;AccountKey=Zm9vYmFyYmF6==;EndpointSuffix=x", "Zm9vYmFyYmF6"),
        ("Endpoint=sb://x/;SharedAccessKey=c2VjcmV0c2VjcmV0;", "c2VjcmV0c2VjcmV0"),
        ("https://a.blob.core.windows.net/c?sv=2022&sig=AbCdEf%3D&se=1", "AbCdEf"),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=deadbeefcafe&X-Amz-Date=1", "deadbeefcafe"),
        ("AZURE_CLIENT_SECRET=Q~8Q~abcdef", "Q~8Q~abcdef"),
        ('{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEv"}', "MIIEv"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKC\n-----END RSA PRIVATE KEY-----", "MIIEow"),
        ("OPENAI_API_KEY=not-a-real-format-key", "not-a-real-format-key"),
        ("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz012345", "hf_abcdefghij"),
        ("stripe sk_live_abcdefghijklmnop1234", "sk_live_abcdefghijklmnop1234"),
        ("gitlab glpat-abcdefghijklmnopqrst", "glpat-abcdefghijklmnopqrst"),
        ("google ya29.a0AfH6SMBabcdefghijklmnop", "ya29.a0AfH6SMBabcdefghijklmnop"),
        ("aws temp ASIAIOSFODNN7EXAMPLE key", "ASIAIOSFODNN7EXAMPLE"),
        ("X-Api-Key: abc123def456", "abc123def456"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("Cookie: session=abcdef123456; theme=dark", "abcdef123456"),
    ],
)
def test_cloud_and_provider_secrets_are_redacted(text: str, secret: str) -> None:
    """The key names and token formats of the big clouds and providers."""
    out = redact_text(text)
    assert secret not in out and REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=1024 exceeded",
        "prompt_tokens: 12, completion_tokens: 30",
        "cache_key=user:42 missing",
        "Error: connection refused",
        "see https://example.com/docs?page=2&sort=asc",
        "aws_access_key_id=AKID-not-secret-format",
    ],
)
def test_names_that_only_look_close_are_kept(text: str) -> None:
    """Counts, cache keys and key ids are not secrets."""
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "key",
    [
        "aws_secret_access_key",
        "AWSSecretAccessKey",
        "clientSecret",
        "AccountKey",
        "x-api-key",
        "sessionToken",
        "SLACK_BOT_TOKEN",
        "db.password",
        "private_key",
        "Set-Cookie",
        "sig",
    ],
)
def test_secret_metadata_keys_of_every_spelling_are_replaced(key: str) -> None:
    """camelCase, snake_case, kebab-case, dotted and SHOUTING names alike."""
    assert normalize_metadata({key: "value-123"})[key] == REDACTED


# -- item 15: trio's cancellation is cancellation ----------------------------------------


def test_trio_cancellation_is_cancelled_not_interrupted(db_url: str) -> None:
    """A cancel scope, move_on_after and a failing task-group sibling under anyio's
    trio backend end runs canceled/cancelled (not the Ctrl-C code)."""
    t = ExecutionTracker(db_url, strict=True)

    @t.with_run("skill", "scope")
    async def sleeper() -> None:
        await anyio.sleep(10)

    @t.with_run("chat", "stream")
    async def stream() -> Any:
        for i in range(100):
            yield i
            await anyio.sleep(10)

    async def main() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await sleeper()
        with anyio.move_on_after(0.01):
            async for _ in stream():
                pass

        async def fail() -> None:
            await anyio.sleep(0.01)
            raise ValueError("sibling failed")

        async def group() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sleeper)
                tg.start_soon(fail)

        with pytest.raises(ExceptionGroup):
            await group()

    anyio.run(main, backend="trio")
    runs = t.list_runs().runs
    assert len(runs) == 3
    assert {(r.status, r.error_code, r.error_message) for r in runs} == {
        (RunStatus.CANCELED, "cancelled", "the run was cancelled")
    }
    t.close()


def test_cancellation_messages_are_fixed_texts(db_url: str) -> None:
    """asyncio's cancel message (task reprs, addresses) never reaches the row."""
    t = ExecutionTracker(db_url, strict=True)

    @t.with_run("skill")
    async def work() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(work())
        await asyncio.sleep(0.01)
        task.cancel(f"Cancelled by <Task pending name='x' at 0x{id(task):x}>")
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    run = only_run(t)
    assert (run.error_code, run.error_message) == ("cancelled", "the run was cancelled")
    t.close()


# -- item 19: bind_context binds the run active when it is called -------------------------


def test_bind_context_parent_is_the_run_active_when_bound(tracker: ExecutionTracker) -> None:
    """The docstring's promise, pinned: the parent is the run active at bind time."""
    results: list[str | None] = []

    def child() -> None:
        with tracker.with_run("skill") as run:
            results.append(run.parent_id)

    with tracker.with_run("chat") as outer:
        bound = exectrack.bind_context(child)
    with tracker.with_run("chat"):
        worker = threading.Thread(target=bound)
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
    assert results == [outer.id]


def test_everything_under_a_secret_key_is_replaced_but_counts() -> None:
    """A list, a mapping or an object under a secret key is secret as a whole; a
    number, a flag or None there is kept (a count is not a secret)."""
    out = normalize_metadata(
        {
            "credentials": ["abc", "def"],
            "private_key": {"pem": "MIIEv..."},
            "api_key": b"raw",
            "token": 5,
            "password": None,
            "secret": True,
        }
    )
    assert out == {
        "credentials": REDACTED,
        "private_key": REDACTED,
        "api_key": REDACTED,
        "token": 5,
        "password": None,
        "secret": True,
    }
