"""httpx's transport (httpcore) asks which async library runs it on every lock, event and cancellation
shield of a request, by `import sniffio`. Without sniffio installed (anyio no longer pulls it in) that
import fails each time and walks sys.path: a fifth of the bench driver's CPU per request in a py-spy
profile, and the same in the worker's gateway calls. sniffio is a dependency (pyproject.toml) for that."""
from __future__ import annotations

import importlib.abc
import sys

from httpcore._synchronization import current_async_library


class CountingFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, name, path=None, target=None):
        self.asked.append(name)
        return None  # let the real finders answer


async def test_httpcore_finds_the_async_library_without_searching_the_import_path():
    finder = CountingFinder()
    sys.meta_path.insert(0, finder)
    try:
        for _ in range(10):
            assert current_async_library() == "asyncio"
    finally:
        sys.meta_path.remove(finder)
    assert finder.asked == [], f"httpcore searched the import path for {sorted(set(finder.asked))}"
